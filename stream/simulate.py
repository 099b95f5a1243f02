"""A seeded generator of realistic, labelled event streams (behind ``fraudstream simulate``).

Pure logic, no Kafka: :func:`simulate` turns a :class:`SimConfig` into a :class:`Simulation`
holding events in event-time order and labels in label-time order; :func:`write_jsonl` writes
either as JSON Lines (gzip when the name ends in ``.gz``). The same seed and configuration give
the same bytes.

What is modelled:

* **Users** with their own habits: a log-normal amount distribution each (median and spread),
  an activity level, a home country and currency, one to three devices and cards, a preferred
  channel, a handful of favourite merchants, and a personal shift of the daily rhythm.
* **Merchants** with a category (which scales amounts), a country and a Zipf-like popularity.
  A few high-value merchants (``distinct_merchants``, electronics, jewellery and travel first,
  the busiest first) have fraud of their own signature (the ``distinct_merchant`` scenario); the
  stream names them (:attr:`Simulation.distinct_merchant_ids`, ``summary()``).
* **Seasonality**: a daily profile (quiet nights, lunch and evening peaks) times a weekly one
  (busier Fridays and Saturdays). Legitimate users also travel (a few per cent of their events
  come from another country) and log in, so neither a new country nor a login is proof of fraud.
* **Fraud scenarios** (``SCENARIOS``): card testing (bursts of tiny amounts from a new device),
  account takeover (login from a new device and country, maybe an account update, then high
  amounts), compromised merchant (many cards defrauded at one merchant over weeks), stolen-card
  spree (several large card-present purchases within hours), amount outliers (one purchase
  far above the user's habit) and distinct-merchant fraud: at a high-value merchant that asks
  for 3-D Secure step-up above a threshold of its own (about 0.3 times its typical order) and
  reviews orders by hand during the day, stolen card details are used for one to three orders
  on different nights (01:00-05:00 UTC, while nobody reviews), each just *below* that
  threshold, from the card owner's country, without bursts. High amounts are normal there; the
  fraud is *small* for the user and the merchant, the opposite of the population's "large
  amount, new place, burst" pattern, and only that merchant's own history shows its signature.
* **Labels** for transactions: fraud confirmed by manual review (days) or chargeback (one to
  several weeks), and some fraud never confirmed; legitimate transactions are labelled
  ``is_fraud=false`` once they mature (``maturity_days`` after the event).

Every event carries its ground truth in ``attributes``: ``scenario`` (``"legit"`` or a scenario
name), ``is_fraud``, and for fraud an ``incident`` id shared by the events of one attack, so
backtests can score against the truth and not only against the labels that arrived. Models must
not read these keys.

>>> sim = simulate(SimConfig(events=2000, days=7, seed=1))
>>> len(sim.events), sim.events[0]["event_time"] <= sim.events[-1]["event_time"]
(2000, True)
>>> sum(e["attributes"]["is_fraud"] for e in sim.events)
20
>>> simulate(SimConfig(events=2000, days=7, seed=1)).events == sim.events
True
"""

from __future__ import annotations

import gzip
import io
import math
import random
import sys
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from stream import wire

__all__ = [
    "SCENARIOS",
    "DEFAULT_MIX",
    "SimConfig",
    "Simulation",
    "simulate",
    "parse_mix",
    "write_jsonl",
]

SCENARIOS = ("card_testing", "account_takeover", "compromised_merchant", "stolen_card_spree",
             "amount_outlier", "distinct_merchant")
DEFAULT_MIX: Mapping[str, float] = {"card_testing": 0.25, "account_takeover": 0.20,
                                    "compromised_merchant": 0.15, "stolen_card_spree": 0.15,
                                    "amount_outlier": 0.10, "distinct_merchant": 0.15}

_MIN = 60_000
_HOUR = 3_600_000
_DAY = 86_400_000

# Kinds of rows.
_TXN, _LOGIN, _ACCT = 0, 1, 2
_TYPE_NAMES = ("transaction", "login", "account_update")

_COUNTRIES = ("DE", "FR", "NL", "GB", "ES", "IT", "PL", "SE", "US")
_COUNTRY_WEIGHTS = (24, 18, 10, 16, 10, 10, 5, 4, 3)
_CURRENCY = {"DE": "EUR", "FR": "EUR", "NL": "EUR", "ES": "EUR", "IT": "EUR", "GB": "GBP",
             "PL": "PLN", "SE": "SEK", "US": "USD"}
# Where fraudsters and travellers appear from, besides the home countries.
_FOREIGN = ("US", "BR", "NG", "RU", "CN", "IN", "TR", "UA", "VN", "ID")

# Category: (share of merchants, amount scale).
_CATEGORIES = {
    "grocery": (0.22, 0.6), "restaurant": (0.16, 0.8), "fuel": (0.08, 1.1),
    "fashion": (0.12, 1.6), "digital": (0.12, 0.4), "electronics": (0.08, 3.5),
    "travel": (0.06, 5.0), "jewellery": (0.03, 6.0), "pharmacy": (0.06, 0.7),
    "gift_cards": (0.03, 1.5),
}
_SPREE_CATEGORIES = ("electronics", "jewellery", "gift_cards", "fashion")
#: Where merchants with their own fraud signature are chosen first (high amounts are normal).
_DISTINCT_CATEGORIES = ("electronics", "jewellery", "travel")
#: A distinct merchant's step-up threshold, as a share of its typical order (e^3.3 * scale).
_STEP_UP_SHARE = 0.3
#: Hours (UTC) when the distinct merchants' review desks are closed and their fraud happens.
_NIGHT = (1.0, 5.0)
_ATO_CATEGORIES = ("electronics", "travel", "jewellery", "gift_cards")

# Hour-of-day weights (00..23) and day-of-week weights (Monday..Sunday).
_HOURS = (0.15, 0.08, 0.05, 0.04, 0.05, 0.12, 0.35, 0.7, 0.95, 1.0, 1.05, 1.2,
          1.5, 1.35, 1.1, 1.05, 1.1, 1.3, 1.55, 1.65, 1.45, 1.1, 0.7, 0.35)
_WEEKDAYS = (0.92, 0.93, 0.95, 1.0, 1.15, 1.2, 0.85)
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)


@dataclass(frozen=True)
class SimConfig:
    """What to simulate. ``events`` is exact: legitimate plus fraud events add up to it."""

    events: int = 100_000
    days: float = 21.0
    #: 2026-01-05T00:00:00Z, a Monday.
    start_ms: int = 1_767_571_200_000
    users: int | None = None          # default: events // 40, at least 50
    merchants: int | None = None      # default: users // 25, at least 20
    #: Share of events that are fraud (logins and account updates of takeovers included).
    fraud_rate: float = 0.01
    #: Share of the fraud events each scenario gets (normalised; scenarios left out get none).
    mix: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    #: Share of legitimate events that are logins rather than transactions.
    login_share: float = 0.05
    #: Legitimate transactions are labelled this long after the event (plus up to a day).
    maturity_days: float = 14.0
    #: Share of fraud incidents that are never confirmed (no label at all).
    fraud_unlabelled: float = 0.1
    #: Merchants with their own fraud signature (the ``distinct_merchant`` scenario's targets).
    distinct_merchants: int = 3
    seed: int = 7
    id_prefix: str = "sim"

    def validate(self) -> None:
        if self.events < 1:
            raise ValueError(f"events: must be at least 1, got {self.events}")
        if not self.days > 0:
            raise ValueError(f"days: must be positive, got {self.days}")
        if not 0.0 <= self.fraud_rate <= 0.5:
            raise ValueError(f"fraud_rate: must be between 0 and 0.5, got {self.fraud_rate}")
        if not 0.0 <= self.fraud_unlabelled <= 1.0:
            raise ValueError(f"fraud_unlabelled: must be between 0 and 1, got "
                             f"{self.fraud_unlabelled}")
        if not 0.0 <= self.login_share < 1.0:
            raise ValueError(f"login_share: must be in [0, 1), got {self.login_share}")
        if self.maturity_days < 0:
            raise ValueError(f"maturity_days: must be >= 0, got {self.maturity_days}")
        unknown = set(self.mix) - set(SCENARIOS)
        if unknown:
            raise ValueError(f"mix: unknown scenario(s) {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(SCENARIOS)})")
        if any(w < 0 for w in self.mix.values()):
            raise ValueError("mix: weights must be >= 0")
        if self.fraud_rate > 0 and not any(w > 0 for w in self.mix.values()):
            raise ValueError("mix: at least one scenario needs a positive weight")
        if self.distinct_merchants < 0:
            raise ValueError(f"distinct_merchants: must be >= 0, got {self.distinct_merchants}")
        if self.mix.get("distinct_merchant", 0) > 0 and self.distinct_merchants == 0:
            raise ValueError("mix: distinct_merchant needs distinct_merchants >= 1 "
                             "(or give the scenario no weight)")
        for name, value in (("users", self.users), ("merchants", self.merchants)):
            if value is not None and value < 1:
                raise ValueError(f"{name}: must be at least 1, got {value}")
        if not self.id_prefix:
            raise ValueError("id_prefix: must not be empty")


def parse_mix(text: str) -> dict[str, float]:
    """``"card_testing=3,amount_outlier=1"`` -> weights (scenarios not named get none).

    >>> parse_mix("card_testing=3, amount_outlier=1")
    {'card_testing': 3.0, 'amount_outlier': 1.0}
    """
    mix: dict[str, float] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, weight = part.partition("=")
        name = name.strip()
        if not sep or name not in SCENARIOS:
            raise ValueError(f"bad scenario weight {part!r}: expected NAME=WEIGHT with NAME one "
                             f"of {', '.join(SCENARIOS)}")
        try:
            mix[name] = float(weight)
        except ValueError:
            raise ValueError(f"bad weight in {part!r}: not a number") from None
        if not mix[name] >= 0:
            raise ValueError(f"bad weight in {part!r}: must be >= 0")
    if not mix:
        raise ValueError("empty scenario mix")
    return mix


# ---------------------------------------------------------------------- the population
@dataclass
class _Users:
    mu: list[float]
    sigma: list[float]
    cum_weight: list[float]
    country: list[str]
    currency: list[str]
    shift: list[int]
    favs: list[tuple[int, ...]]
    fav_p: list[float]
    devices: list[int]
    cards: list[int]
    channel: list[str]


@dataclass
class _Merchants:
    category: list[str]
    scale: list[float]
    country: list[str]
    cum_weight: list[float]
    by_category: dict[str, list[int]]
    #: Merchants with their own fraud signature, and each one's step-up threshold.
    distinct: dict[int, float] = field(default_factory=dict)


def _pick_distinct(merchants: _Merchants, k: int) -> dict[int, float]:
    """The ``k`` busiest merchants of the high-value categories (then of any category), each
    with its step-up threshold (rounded to 5, as merchants set them)."""
    weight = [b - a for a, b in zip([0.0] + merchants.cum_weight[:-1], merchants.cum_weight)]
    preferred = set(_DISTINCT_CATEGORIES)
    ranked = sorted(range(len(weight)),
                    key=lambda m: (merchants.category[m] not in preferred, -weight[m], m))
    out = {}
    for m in ranked[:k]:
        typical = math.exp(3.3) * merchants.scale[m]
        out[m] = max(5.0, 5.0 * round(_STEP_UP_SHARE * typical / 5.0))
    return out


def _make_merchants(rng: random.Random, n: int) -> _Merchants:
    names = list(_CATEGORIES)
    cum_share = list(accumulate(_CATEGORIES[c][0] for c in names))
    category = rng.choices(names, cum_weights=cum_share, k=n)
    # Every category exists, so every scenario finds its merchants.
    for i, name in enumerate(names[:n]):
        category[i] = name
    country = rng.choices(_COUNTRIES, weights=_COUNTRY_WEIGHTS, k=n)
    popularity = [1.0 / (rank + 1) ** 0.9 for rank in range(n)]
    rng.shuffle(popularity)
    by_category: dict[str, list[int]] = {}
    for i, c in enumerate(category):
        by_category.setdefault(c, []).append(i)
    return _Merchants(category=category, scale=[_CATEGORIES[c][1] for c in category],
                      country=country, cum_weight=list(accumulate(popularity)),
                      by_category=by_category)


def _make_users(rng: random.Random, n: int, merchants: _Merchants) -> _Users:
    n_m = len(merchants.category)
    m_cum = merchants.cum_weight
    mu, sigma, weight, country, shift, favs, fav_p, devices, cards, channel = \
        [], [], [], [], [], [], [], [], [], []
    for _ in range(n):
        mu.append(rng.gauss(3.3, 0.6))                    # median amount ~ e^3.3 = 27
        sigma.append(rng.uniform(0.3, 0.9))
        weight.append(rng.lognormvariate(0.0, 0.9))       # heavy and light users
        country.append(rng.choices(_COUNTRIES, weights=_COUNTRY_WEIGHTS)[0])
        shift.append(rng.randint(-3, 3))                  # early birds and night owls
        k = min(n_m, rng.randint(2, 8))
        favs.append(tuple(sorted(set(rng.choices(range(n_m), cum_weights=m_cum, k=k)))))
        fav_p.append(rng.uniform(0.5, 0.9))
        devices.append(rng.choices((1, 2, 3), weights=(60, 30, 10))[0])
        cards.append(rng.choices((1, 2), weights=(75, 25))[0])
        channel.append(rng.choices(("web", "app", "pos"), weights=(35, 35, 30))[0])
    return _Users(mu=mu, sigma=sigma, cum_weight=list(accumulate(weight)), country=country,
                  currency=[_CURRENCY[c] for c in country], shift=shift, favs=favs,
                  fav_p=fav_p, devices=devices, cards=cards, channel=channel)


# ---------------------------------------------------------------------- legitimate traffic
# Legitimate traffic is the bulk of the stream and is drawn in vectorised form (NumPy); the
# fraud scenarios are few, stateful sequences and are written as plain Python. A fraud row is a
# tuple (time, kind, user, merchant, amount, card, device, ip, country, channel, scenario,
# incident, label) where label is None (never confirmed) or (delay_ms, source).


@dataclass
class _Legit:
    time: np.ndarray          # int64 epoch ms
    user: np.ndarray          # int64
    merchant: np.ndarray      # int64, -1 for logins
    amount: np.ndarray        # float64, rounded to cents
    device: np.ndarray        # index into the user's devices
    card: np.ndarray          # index into the user's cards
    travel: np.ndarray        # -1 at home, else index into _FOREIGN
    label_delay: np.ndarray   # int64 ms (transactions only)
    travel_ips: dict[int, str]


def _draw_legit(rng: np.random.Generator, n: int, cfg: SimConfig, users: _Users,
                merchants: _Merchants, hour_cum: np.ndarray) -> _Legit:
    n_users, n_merch = len(users.mu), len(merchants.scale)
    u_cum = np.asarray(users.cum_weight)
    user = np.minimum(np.searchsorted(u_cum, rng.random(n) * u_cum[-1], side="right"),
                      n_users - 1)
    n_hours = len(hour_cum)
    hour = np.minimum(np.searchsorted(hour_cum, rng.random(n) * hour_cum[-1], side="right"),
                      n_hours - 1)
    hour = (hour + np.asarray(users.shift)[user]) % n_hours
    start, end = cfg.start_ms, cfg.start_ms + int(cfg.days * _DAY)
    time = start + hour * _HOUR + (rng.random(n) * _HOUR).astype(np.int64)
    np.minimum(time, end - 1, out=time)

    login = rng.random(n) < cfg.login_share
    fav_width = max(len(f) for f in users.favs)
    favs = np.array([f + (f[0],) * (fav_width - len(f)) for f in users.favs], dtype=np.int64)
    fav_count = np.array([len(f) for f in users.favs])
    fav_pick = favs[user, (rng.random(n) * fav_count[user]).astype(np.int64)]
    m_cum = np.asarray(merchants.cum_weight)
    any_pick = np.minimum(np.searchsorted(m_cum, rng.random(n) * m_cum[-1], side="right"),
                          n_merch - 1)
    merchant = np.where(rng.random(n) < np.asarray(users.fav_p)[user], fav_pick, any_pick)
    merchant[login] = -1

    mu, sigma = np.asarray(users.mu)[user], np.asarray(users.sigma)[user]
    amount = np.exp(mu + sigma * rng.standard_normal(n)) * np.asarray(merchants.scale)[merchant]
    amount = np.maximum(np.round(amount, 2), 0.01)
    amount[login] = np.nan

    n_dev = np.asarray(users.devices)[user]
    device = np.where(rng.random(n) < 0.8, 0, (rng.random(n) * n_dev).astype(np.int64))
    card = np.where((np.asarray(users.cards)[user] == 1) | (rng.random(n) < 0.7), 0, 1)
    travel = np.where(rng.random(n) < 0.03,
                      (rng.random(n) * len(_FOREIGN)).astype(np.int64), -1)
    octets = rng.integers((11, 0, 0, 1), (224, 256, 256, 255), size=(n, 4))
    travel_ips = {int(i): "%d.%d.%d.%d" % tuple(octets[i].tolist())
                  for i in np.flatnonzero(travel >= 0)}
    label_delay = int(cfg.maturity_days * _DAY) + (rng.random(n) * _DAY).astype(np.int64)
    return _Legit(time=time, user=user, merchant=merchant, amount=amount, device=device,
                  card=card, travel=travel, label_delay=label_delay, travel_ips=travel_ips)


def _user_ip(u: int, d: int) -> str:
    return f"10.{(u >> 8) & 255}.{u & 255}.{d + 1}"


def _random_ip(rng: random.Random) -> str:
    return "%d.%d.%d.%d" % (rng.randint(11, 223), rng.randint(0, 255), rng.randint(0, 255),
                            rng.randint(1, 254))


def _fraud_label(rng: random.Random, unlabelled: float) -> tuple[int, str] | None:
    """How long until an incident is confirmed, and by whom; ``None``: never."""
    if rng.random() < unlabelled:
        return None
    if rng.random() < 0.3:
        return (int(rng.uniform(1.0, 4.0) * _DAY), "manual_review")
    days = min(60.0, max(3.0, rng.lognormvariate(math.log(14.0), 0.5)))
    return (int(days * _DAY), "chargeback")


def _jitter(rng: random.Random, label: tuple[int, str] | None) -> tuple[int, str] | None:
    """One incident is confirmed at about one time: the same delay, give or take six hours."""
    if label is None:
        return None
    return (label[0] + int(rng.random() * 6 * _HOUR), label[1])


# ---------------------------------------------------------------------- fraud scenarios
class _Fraud:
    """Writes the rows of fraud incidents, each scenario until its budget of events is spent."""

    def __init__(self, rng: random.Random, cfg: SimConfig, users: _Users,
                 merchants: _Merchants, hour_cum: np.ndarray) -> None:
        self.rng, self.cfg, self.users, self.merchants = rng, cfg, users, merchants
        self.hour_cum = hour_cum.tolist()
        self.start = cfg.start_ms
        self.span = int(cfg.days * _DAY)
        self.rows: list[tuple] = []

    def run(self, budgets: Mapping[str, int]) -> list[tuple]:
        makers = {"card_testing": self._card_testing, "account_takeover": self._takeover,
                  "compromised_merchant": self._compromised_merchant,
                  "stolen_card_spree": self._spree, "amount_outlier": self._outlier,
                  "distinct_merchant": self._distinct_merchant}
        for number, name in enumerate(SCENARIOS):
            left, k = budgets.get(name, 0), 0
            if name == "distinct_merchant" and not self.merchants.distinct:
                continue  # validate() refuses this; a direct caller gets no such fraud
            while left > 0:
                left -= makers[name](f"{name[:2]}{number}-{k:05d}", left)
                k += 1
        return self.rows

    # -------------------------------------------------------------- helpers
    def _add(self, t: int, kind: int, u: int, m: int | None, amount: float | None,
             card: str | None, device: str | None, ip: str | None, country: str,
             channel: str, scenario: str, incident: str, label: tuple[int, str] | None) -> None:
        t = min(max(t, self.start), self.start + self.span - 1)
        self.rows.append((t, kind, u, m, amount, card, device, ip, country, channel, scenario,
                          incident, label))

    def _start_time(self) -> int:
        return self.start + int(self.rng.random() * self.span)

    def _seasonal_time(self) -> int:
        cum = self.hour_cum
        h = min(bisect_right(cum, self.rng.random() * cum[-1]), len(cum) - 1)
        return self.start + h * _HOUR + int(self.rng.random() * _HOUR)

    def _user(self) -> int:
        cum = self.users.cum_weight
        return min(bisect_right(cum, self.rng.random() * cum[-1]), len(cum) - 1)

    def _merchant_in(self, categories: Iterable[str]) -> int:
        pool = [m for c in categories for m in self.merchants.by_category.get(c, ())]
        # With few merchants a category can be empty: any merchant then stands in for it.
        return self.rng.choice(pool or range(len(self.merchants.scale)))

    def _amount(self, u: int, m: int, factor: float) -> float:
        users = self.users
        value = math.exp(users.mu[u] + users.sigma[u] * self.rng.gauss(0.0, 1.0))
        return round(max(0.01, value * self.merchants.scale[m] * factor), 2)

    def _label(self) -> tuple[int, str] | None:
        return _fraud_label(self.rng, self.cfg.fraud_unlabelled)

    # -------------------------------------------------------------- scenarios
    def _card_testing(self, incident: str, budget: int) -> int:
        """Bursts of tiny amounts at digital merchants from a new device, sometimes a cash-out."""
        rng = self.rng
        u = self._user()
        n = min(budget, rng.randint(5, 30))
        t = self._start_time()
        device, ip = f"dx-{incident}", _random_ip(rng)
        country = rng.choice((self.users.country[u],) + _FOREIGN)
        shops = [self._merchant_in(("digital",)) for _ in range(rng.randint(1, 3))]
        label = self._label()
        cash_out = n > 3 and rng.random() < 0.4
        for i in range(n):
            t += rng.randint(5_000, 90_000)
            amount = round(rng.uniform(80.0, 400.0) if cash_out and i == n - 1
                           else rng.uniform(0.5, 5.0), 2)
            self._add(t, _TXN, u, rng.choice(shops), amount, f"c{u:06d}-0", device, ip, country,
                      "web", "card_testing", incident, _jitter(rng, label))
        return n

    def _takeover(self, incident: str, budget: int) -> int:
        """A login from a new device and country, maybe an account update, then high amounts."""
        rng = self.rng
        u = self._user()
        t = self._start_time()
        device, ip, country = f"dx-{incident}", _random_ip(rng), rng.choice(_FOREIGN)
        self._add(t, _LOGIN, u, None, None, None, device, ip, country, "web",
                  "account_takeover", incident, None)
        made = 1
        if made < budget and rng.random() < 0.5:
            t += rng.randint(_MIN, 20 * _MIN)
            self._add(t, _ACCT, u, None, None, None, device, ip, country, "web",
                      "account_takeover", incident, None)
            made += 1
        label = self._label()
        for _ in range(min(budget - made, rng.randint(2, 6))):
            t += rng.randint(5 * _MIN, 3 * _HOUR)
            m = self._merchant_in(_ATO_CATEGORIES)
            self._add(t, _TXN, u, m, self._amount(u, m, rng.uniform(3.0, 10.0)), f"c{u:06d}-0",
                      device, ip, country, "web", "account_takeover", incident,
                      _jitter(rng, label))
            made += 1
        return made

    def _compromised_merchant(self, incident: str, budget: int) -> int:
        """Many cards charged at one merchant over one to four weeks."""
        rng, merchants = self.rng, self.merchants
        cum = merchants.cum_weight
        m = min(bisect_right(cum, rng.random() * cum[-1]), len(cum) - 1)
        window = min(self.span, int(rng.uniform(7.0, 28.0) * _DAY))
        t0 = self.start + int(rng.random() * max(1, self.span - window))
        n = min(budget, rng.randint(10, 60))
        made = 0
        while made < n:
            u = self._user()
            label = self._label()  # each card's owner disputes on their own schedule
            for _ in range(min(n - made, rng.randint(1, 3))):
                t = t0 + int(rng.random() * window)
                self._add(t, _TXN, u, m, self._amount(u, m, rng.uniform(1.5, 4.0)),
                          f"c{u:06d}-0", None, None, merchants.country[m], "pos",
                          "compromised_merchant", incident, _jitter(rng, label))
                made += 1
        return made

    def _spree(self, incident: str, budget: int) -> int:
        """A stolen card: several large card-present purchases within hours."""
        rng = self.rng
        u = self._user()
        t = self._start_time()
        n = min(budget, rng.randint(3, 12))
        country = self.users.country[u] if rng.random() < 0.8 else rng.choice(_FOREIGN)
        label = self._label()
        for _ in range(n):
            t += rng.randint(5 * _MIN, 45 * _MIN)
            m = self._merchant_in(_SPREE_CATEGORIES)
            self._add(t, _TXN, u, m, self._amount(u, m, rng.uniform(2.0, 6.0)), f"c{u:06d}-0",
                      None, None, country, "pos", "stolen_card_spree", incident,
                      _jitter(rng, label))
        return n

    def _outlier(self, incident: str, budget: int) -> int:
        """One purchase far above the user's habit, at a merchant they do not use."""
        rng, users = self.rng, self.users
        u = self._user()
        favs = set(users.favs[u])
        m = rng.randrange(len(self.merchants.scale))
        for _ in range(10):
            if m not in favs:
                break
            m = rng.randrange(len(self.merchants.scale))
        device = f"d{u:06d}-0" if users.channel[u] != "pos" else None
        # Far above the habit whatever the merchant: the user's 97.7th percentile times 5 to 20.
        amount = round(math.exp(users.mu[u] + 2.0 * users.sigma[u]) * rng.uniform(5.0, 20.0), 2)
        self._add(self._seasonal_time(), _TXN, u, m, amount,
                  f"c{u:06d}-0", device, _user_ip(u, 0), users.country[u], users.channel[u],
                  "amount_outlier", incident, self._label())
        return 1


    def _distinct_merchant(self, incident: str, budget: int) -> int:
        """Stolen card details used at a distinct merchant: one to three orders on different
        nights, while its review desk is closed, each just below its step-up threshold."""
        rng, users = self.rng, self.users
        distinct = self.merchants.distinct
        m = rng.choice(sorted(distinct))
        threshold = distinct[m]
        u = self._user()
        # The fraudster's own browser, behind a proxy in the card owner's country.
        device, ip, country = f"dx-{incident}", _random_ip(rng), users.country[u]
        label = self._label()
        n_days = max(1, self.span // _DAY)
        day = self.start + rng.randrange(n_days) * _DAY
        made = 0
        n = min(budget, rng.randint(1, 3))
        while made < n and day < self.start + self.span:
            t = day + int(rng.uniform(_NIGHT[0], _NIGHT[1]) * _HOUR)
            amount = round(threshold * rng.uniform(0.85, 0.99), 2)
            self._add(t, _TXN, u, m, amount, f"c{u:06d}-0", device, ip, country, "web",
                      "distinct_merchant", incident, _jitter(rng, label))
            made += 1
            day += rng.randint(1, 3) * _DAY  # spaced out: no burst to give it away
        return made


# ---------------------------------------------------------------------- the result
@dataclass
class Simulation:
    """The generated stream; events and labels are rendered to contract dicts on demand."""

    config: SimConfig
    users: _Users
    merchants: _Merchants
    legit: _Legit
    fraud: list[tuple]
    order: list[int]             # row numbers in event-time order (fraud rows after legit ones)
    label_time: list[int]        # label-time order
    label_pos: list[int]         # position (in event order) of the labelled event
    label_fraud: list[bool]
    label_source: list[str]

    @property
    def n_events(self) -> int:
        return len(self.order)

    @property
    def distinct_merchant_ids(self) -> list[str]:
        """The merchants with their own fraud signature (``distinct_merchant`` scenario)."""
        return [f"m{m:05d}" for m in sorted(self.merchants.distinct)]

    @property
    def n_labels(self) -> int:
        return len(self.label_time)

    def event_id(self, position: int) -> str:
        return f"{self.config.id_prefix}-{position:08d}"

    def iter_events(self) -> Iterator[dict[str, Any]]:
        """Events as contract dicts in canonical form (epoch-ms times), in event-time order."""
        prefix = self.config.id_prefix
        users, merchants, lg = self.users, self.merchants, self.legit
        n_legit = len(lg.time)
        uid = [f"u{u:06d}" for u in range(len(users.mu))]
        mid = [f"m{m:05d}" for m in range(len(merchants.scale))]
        cards = [(f"c{u:06d}-0", f"c{u:06d}-1") for u in range(len(uid))]
        devices = [tuple(f"d{u:06d}-{d}" for d in range(3)) for u in range(len(uid))]
        ips = [tuple(_user_ip(u, d) for d in range(3)) for u in range(len(uid))]
        login_channel = ["app" if c == "app" else "web" for c in users.channel]
        # Shared (never mutated) attribute objects: one per merchant category, one for logins.
        legit_attrs = {c: {"scenario": "legit", "is_fraud": False, "category": c}
                       for c in _CATEGORIES}
        login_attrs = {"scenario": "legit", "is_fraud": False}
        categories, currency = merchants.category, users.currency
        t_l, u_l, m_l = lg.time.tolist(), lg.user.tolist(), lg.merchant.tolist()
        a_l, d_l, c_l = lg.amount.tolist(), lg.device.tolist(), lg.card.tolist()
        tr_l, tr_ip = lg.travel.tolist(), lg.travel_ips
        home, channel = users.country, users.channel
        for pos, row in enumerate(self.order):
            if row >= n_legit:
                yield self._fraud_event(pos, self.fraud[row - n_legit], uid, mid)
                continue
            u, m, d = u_l[row], m_l[row], d_l[row]
            travel = tr_l[row]
            if travel < 0:
                country, ip = home[u], ips[u][d]
            else:
                country, ip = _FOREIGN[travel], tr_ip[row]
            if m < 0:
                yield {"event_id": f"{prefix}-{pos:08d}", "event_type": "login",
                       "event_time": t_l[row], "user_id": uid[u], "device_id": devices[u][d],
                       "ip": ip, "country": country, "channel": login_channel[u],
                       "attributes": login_attrs, "schema_version": 1}
                continue
            ch = channel[u]
            ev = {"event_id": f"{prefix}-{pos:08d}", "event_type": "transaction",
                  "event_time": t_l[row], "user_id": uid[u], "merchant_id": mid[m],
                  "amount": a_l[row], "currency": currency[u], "card_id": cards[u][c_l[row]]}
            if ch != "pos":  # card-present purchases have no device or IP address
                ev["device_id"] = devices[u][d]
                ev["ip"] = ip
            ev["country"] = country
            ev["channel"] = ch
            ev["attributes"] = legit_attrs[categories[m]]
            ev["schema_version"] = 1
            yield ev

    def _fraud_event(self, pos: int, row: tuple, uid: list[str], mid: list[str]) -> dict:
        (t, kind, u, m, amount, card, device, ip, country, channel, scenario, incident,
         _label) = row
        ev: dict[str, Any] = {"event_id": f"{self.config.id_prefix}-{pos:08d}",
                              "event_type": _TYPE_NAMES[kind], "event_time": t,
                              "user_id": uid[u]}
        attrs: dict[str, Any] = {"scenario": scenario, "is_fraud": True, "incident": incident}
        if m is not None:
            ev["merchant_id"] = mid[m]
            attrs["category"] = self.merchants.category[m]
        if amount is not None:
            ev["amount"] = amount
            ev["currency"] = self.users.currency[u]
        for name, value in (("card_id", card), ("device_id", device), ("ip", ip)):
            if value is not None:
                ev[name] = value
        ev["country"] = country
        ev["channel"] = channel
        ev["attributes"] = attrs
        ev["schema_version"] = 1
        return ev

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(self.iter_events())

    def iter_labels(self) -> Iterator[dict[str, Any]]:
        """Labels as contract dicts, in label-time order (ties: event order)."""
        prefix = self.config.id_prefix
        n_legit = len(self.legit.time)
        u_l, m_l = self.legit.user.tolist(), self.legit.merchant.tolist()
        order, fraud = self.order, self.fraud
        for label_time, pos, is_fraud, source in zip(self.label_time, self.label_pos,
                                                     self.label_fraud, self.label_source):
            row = order[pos]
            if row < n_legit:
                u, m = u_l[row], m_l[row]
            else:
                u, m = fraud[row - n_legit][2], fraud[row - n_legit][3]
            yield {"event_id": f"{prefix}-{pos:08d}", "user_id": f"u{u:06d}",
                   "merchant_id": f"m{m:05d}", "is_fraud": is_fraud, "label_time": label_time,
                   "source": source}

    @property
    def labels(self) -> list[dict[str, Any]]:
        return list(self.iter_labels())

    def summary(self) -> dict[str, Any]:
        """Counts by scenario, label counts and the covered time range."""
        by_scenario = {"legit": len(self.legit.time)} if len(self.legit.time) else {}
        for row in self.fraud:
            by_scenario[row[10]] = by_scenario.get(row[10], 0) + 1
        times = np.concatenate([self.legit.time, np.array([r[0] for r in self.fraud],
                                                          dtype=np.int64)])
        return {"events": self.n_events, "by_scenario": dict(sorted(by_scenario.items())),
                "distinct_merchants": self.distinct_merchant_ids,
                "labels": self.n_labels, "fraud_labels": int(sum(self.label_fraud)),
                "first_event_time": int(times.min()) if len(times) else None,
                "last_event_time": int(times.max()) if len(times) else None}


def _fraud_budgets(cfg: SimConfig) -> dict[str, int]:
    """Fraud events per scenario: the mix applied to round(events * fraud_rate), exactly."""
    total = round(cfg.events * cfg.fraud_rate)
    weights = {name: float(cfg.mix.get(name, 0.0)) for name in SCENARIOS}
    weight_sum = sum(weights.values())
    if total == 0 or weight_sum == 0:
        return {}
    exact = {name: total * w / weight_sum for name, w in weights.items()}
    budgets = {name: int(v) for name, v in exact.items()}
    # The events that rounding down left over go to the largest remainders.
    for name in sorted(SCENARIOS, key=lambda n: (-(exact[n] - budgets[n]), n)):
        if sum(budgets.values()) >= total:
            break
        if weights[name] > 0:
            budgets[name] += 1
    return {k: v for k, v in budgets.items() if v > 0}


def _hour_weights(cfg: SimConfig) -> np.ndarray:
    """Cumulative seasonal weight of every hour of the simulated period."""
    first = cfg.start_ms // _HOUR
    n_hours = max(1, math.ceil(cfg.days * 24))
    hours = np.arange(first, first + n_hours)
    weekday = (hours // 24 + _EPOCH_WEEKDAY) % 7
    return np.cumsum(np.asarray(_HOURS)[hours % 24] * np.asarray(_WEEKDAYS)[weekday])


def simulate(cfg: SimConfig) -> Simulation:
    """Generate the stream ``cfg`` describes; the same ``cfg`` gives the same stream."""
    cfg.validate()
    rng = random.Random(cfg.seed)
    n_users = cfg.users or max(50, cfg.events // 40)
    merchants = _make_merchants(rng, cfg.merchants or max(20, n_users // 25))
    users = _make_users(rng, n_users, merchants)
    hour_cum = _hour_weights(cfg)
    budgets = _fraud_budgets(cfg)
    if budgets.get("distinct_merchant"):  # no such fraud, no merchant named distinct
        merchants.distinct = _pick_distinct(merchants, min(cfg.distinct_merchants,
                                                           len(merchants.scale)))
    legit = _draw_legit(np.random.default_rng([cfg.seed, 1]), cfg.events - sum(budgets.values()),
                        cfg, users, merchants, hour_cum)
    fraud = _Fraud(rng, cfg, users, merchants, hour_cum).run(budgets)

    n_legit = len(legit.time)
    times = np.concatenate([legit.time, np.array([r[0] for r in fraud], dtype=np.int64)])
    order = np.argsort(times, kind="stable")  # ties: legitimate rows first, then creation order
    position = np.empty_like(order)
    position[order] = np.arange(len(order))

    # Labels: every legitimate transaction once it matures; fraud as its incident decided.
    txn = np.flatnonzero(legit.merchant >= 0)
    f_rows = [i for i, r in enumerate(fraud) if r[12] is not None and r[1] == _TXN]
    l_time = np.concatenate([legit.time[txn] + legit.label_delay[txn],
                             np.array([fraud[i][0] + fraud[i][12][0] for i in f_rows],
                                      dtype=np.int64)])
    l_pos = np.concatenate([position[txn], position[n_legit + np.array(f_rows, dtype=np.int64)]])
    sources = ["maturity"] * len(txn) + [fraud[i][12][1] for i in f_rows]
    l_fraud = [False] * len(txn) + [True] * len(f_rows)
    l_order = np.lexsort((l_pos, l_time)).tolist()
    return Simulation(config=cfg, users=users, merchants=merchants, legit=legit, fraud=fraud,
                      order=order.tolist(), label_time=l_time[l_order].tolist(),
                      label_pos=l_pos[l_order].tolist(),
                      label_fraud=[l_fraud[i] for i in l_order],
                      label_source=[sources[i] for i in l_order])


# ---------------------------------------------------------------------- writing
def open_output(path: str | Path, compresslevel: int = 1) -> BinaryIO:
    """A binary writer: stdout for ``-``, gzip for names ending in ``.gz``, else a plain file."""
    if str(path) == "-":
        return sys.stdout.buffer
    p = Path(path)
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    if p.name.endswith(".gz"):
        # mtime=0 keeps the gzip header, and so the file, identical for identical content.
        raw = p.open("wb")
        return gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=compresslevel,
                             mtime=0)
    return p.open("wb")


def write_jsonl(records: Iterable[Mapping[str, Any]], path: str | Path,
                chunk_bytes: int = 1 << 20) -> int:
    """Write ``records`` as JSON Lines to ``path`` (``.gz`` compresses); returns the count."""
    out = open_output(path)
    n = 0
    dumps_line = wire.dumps_line
    # One growing buffer written in megabyte chunks: cheaper than a write (or a gzip compress
    # call) per line, and than joining lists of lines.
    buf = bytearray()
    try:
        for record in records:
            buf += dumps_line(record)
            n += 1
            if len(buf) >= chunk_bytes:
                out.write(buf)
                buf.clear()
        out.write(buf)
    finally:
        if out is sys.stdout.buffer:
            out.flush()
        else:
            fileobj = getattr(out, "fileobj", None)
            out.close()
            if isinstance(fileobj, io.IOBase):
                fileobj.close()
    return n
