"""The simulator: determinism, contract validity, scenario mix, scenario shapes, label delays."""

from __future__ import annotations

import gzip
import statistics
from collections import Counter, defaultdict

import pytest
from click.testing import CliRunner

from stream import wire
from stream.events import decode_event, decode_label
from stream.simulate import SCENARIOS, SimConfig, parse_mix, simulate, write_jsonl

DAY = 86_400_000
HOUR = 3_600_000


@pytest.fixture(scope="module")
def sim():
    return simulate(SimConfig(events=40_000, days=28, fraud_rate=0.05, seed=11))


@pytest.fixture(scope="module")
def events(sim):
    return sim.events


@pytest.fixture(scope="module")
def labels(sim):
    return sim.labels


def by_incident(events):
    out = defaultdict(list)
    for e in events:
        if e["attributes"]["is_fraud"]:
            out[(e["attributes"]["scenario"], e["attributes"]["incident"])].append(e)
    return out


def test_same_seed_same_bytes_other_seed_other_stream(tmp_path):
    cfg = SimConfig(events=3000, days=7, seed=5)
    paths = []
    for run in range(2):
        sim = simulate(cfg)
        ev, lab = tmp_path / f"e{run}.jsonl.gz", tmp_path / f"l{run}.jsonl.gz"
        write_jsonl(sim.iter_events(), ev)
        write_jsonl(sim.iter_labels(), lab)
        paths.append((ev.read_bytes(), lab.read_bytes()))
    assert paths[0] == paths[1]
    # The default mix includes fraud at merchants with their own signature, chosen the same way.
    assert sim.summary()["by_scenario"]["distinct_merchant"] > 0
    assert simulate(cfg).distinct_merchant_ids == sim.distinct_merchant_ids
    assert len(sim.distinct_merchant_ids) == 3
    other = simulate(SimConfig(events=3000, days=7, seed=6))
    assert other.events != simulate(cfg).events


def test_every_event_and_label_passes_the_contract(tmp_path, sim):
    ev, lab = tmp_path / "e.jsonl.gz", tmp_path / "l.jsonl"
    assert write_jsonl(sim.iter_events(), ev) == 40_000
    assert write_jsonl(sim.iter_labels(), lab) == sim.n_labels
    with gzip.open(ev, "rb") as fh:
        decoded = [decode_event(line.rstrip(b"\n")) for line in fh]
    assert len(decoded) == 40_000
    assert len({e.event_id for e in decoded}) == 40_000
    # Written in canonical form: re-encoding the decoded event gives the same bytes.
    with gzip.open(ev, "rb") as fh:
        for line, event in zip(fh, decoded[:2000]):
            assert event.encode() + b"\n" == line
    kinds = Counter(e.event_type for e in decoded)
    assert set(kinds) == {"transaction", "login", "account_update"}
    assert all(decode_label(line.rstrip(b"\n")) for line in lab.read_bytes().splitlines())


def test_size_fraud_rate_and_scenario_mix_are_exact(events):
    assert len(events) == 40_000
    truth = Counter(e["attributes"]["scenario"] for e in events)
    assert sum(v for k, v in truth.items() if k != "legit") == 2000
    # Default mix 25/20/15/15/10/15 of 2000 fraud events.
    assert truth["card_testing"] == 500
    assert truth["account_takeover"] == 400
    assert truth["compromised_merchant"] == 300
    assert truth["stolen_card_spree"] == 300
    assert truth["amount_outlier"] == 200
    assert truth["distinct_merchant"] == 300
    assert all(e["attributes"]["is_fraud"] == (e["attributes"]["scenario"] != "legit")
               for e in events)


def test_custom_mix_only_named_scenarios():
    sim = simulate(SimConfig(events=5000, days=7, fraud_rate=0.02,
                             mix=parse_mix("card_testing=3,amount_outlier=1"), seed=2))
    truth = Counter(e["attributes"]["scenario"] for e in sim.events)
    assert truth == {"legit": 4900, "card_testing": 75, "amount_outlier": 25}


def test_events_in_time_order_inside_the_period(events, sim):
    times = [e["event_time"] for e in events]
    assert times == sorted(times)
    start = sim.config.start_ms
    assert start <= times[0] and times[-1] < start + 28 * DAY
    assert [e["event_id"] for e in events[:3]] == ["sim-00000000", "sim-00000001", "sim-00000002"]


def test_daily_and_weekly_seasonality(events):
    legit = [e["event_time"] for e in events if e["attributes"]["scenario"] == "legit"]
    hours = Counter((t // HOUR) % 24 for t in legit)
    assert hours[3] * 4 < hours[12], hours    # nights are quiet
    assert hours[19] > hours[9]               # evening peak
    # 1970-01-01 was a Thursday: day index 1 = Friday, 3 = Sunday.
    weekday = Counter((t // DAY) % 7 for t in legit)
    assert weekday[1] > weekday[3] * 1.15     # Fridays busier than Sundays


def test_users_have_their_own_habits(events):
    amounts = defaultdict(list)
    merchants = defaultdict(Counter)
    for e in events:
        if e["attributes"]["scenario"] == "legit" and e["event_type"] == "transaction":
            amounts[e["user_id"]].append(e["amount"])
            merchants[e["user_id"]][e["merchant_id"]] += 1
    busy = [u for u, xs in amounts.items() if len(xs) >= 30]
    assert len(busy) > 50
    medians = sorted(statistics.median(amounts[u]) for u in busy)
    assert medians[-len(medians) // 10] > 4 * medians[len(medians) // 10]  # habits differ a lot
    # Favourite merchants: a user's top three merchants carry most of their purchases.
    top3 = [sum(c for _, c in merchants[u].most_common(3)) / len(amounts[u]) for u in busy]
    assert statistics.median(top3) > 0.4
    # Users travel a little: most but not all events come from one country per user.
    countries = defaultdict(Counter)
    for e in events:
        if e["attributes"]["scenario"] == "legit":
            countries[e["user_id"]][e["country"]] += 1
    home_share = sum(c.most_common(1)[0][1] for c in countries.values()) / sum(
        sum(c.values()) for c in countries.values())
    assert 0.93 < home_share < 0.995


def test_scenario_shapes(events, sim):
    incidents = by_incident(events)
    seen = {s for s, _ in incidents}
    assert seen == set(SCENARIOS)
    legit_devices = defaultdict(set)
    medians = defaultdict(list)
    for e in events:
        if e["attributes"]["scenario"] == "legit":
            legit_devices[e["user_id"]].add(e.get("device_id"))
            if e["event_type"] == "transaction":
                medians[e["user_id"]].append(e["amount"])
    for (scenario, _), evs in incidents.items():
        times = [e["event_time"] for e in evs]
        users = {e["user_id"] for e in evs}
        txns = [e for e in evs if e["event_type"] == "transaction"]
        if scenario == "card_testing":
            assert len(users) == 1 and max(times) - min(times) < 2 * HOUR
            small = [e["amount"] for e in txns if e["amount"] <= 5.0]
            assert len(small) >= len(txns) - 1
            assert evs[0]["device_id"] not in legit_devices[evs[0]["user_id"]]
        elif scenario == "account_takeover":
            assert evs[0]["event_type"] == "login"
            assert evs[0]["device_id"] not in legit_devices[evs[0]["user_id"]]
            assert {e["device_id"] for e in evs} == {evs[0]["device_id"]}
        elif scenario == "compromised_merchant":
            assert len({e["merchant_id"] for e in evs}) == 1
            if len(evs) >= 10:
                assert len(users) >= 4
        elif scenario == "stolen_card_spree":
            assert len(users) == 1 and max(times) - min(times) < 12 * HOUR
            assert all(e["channel"] == "pos" for e in evs)
        elif scenario == "distinct_merchant":
            # One stolen card, one to three orders at one distinct merchant on different nights,
            # just below that merchant's step-up threshold.
            (m,) = {e["merchant_id"] for e in evs}
            threshold = sim.merchants.distinct[int(m[1:])]
            assert m in sim.distinct_merchant_ids and len(users) == 1 and 1 <= len(evs) <= 3
            assert all(0.85 * threshold <= e["amount"] < threshold for e in evs)
            assert all(b - a >= 20 * HOUR for a, b in zip(times, times[1:]))  # other nights
            assert all(1 <= (t // HOUR) % 24 < 5 for t in times)
            assert all(e["channel"] == "web" for e in evs)
        elif scenario == "amount_outlier":
            (e,) = evs
            habit = medians.get(e["user_id"])
            if habit and len(habit) >= 5:
                assert e["amount"] > 3 * statistics.median(habit)


def test_distinct_merchants_have_their_own_fraud_signature(events, sim):
    # High-value merchants, among the busiest of their categories, with high amounts normal and
    # fraud in a band that their own legitimate traffic rarely uses.
    distinct = sim.distinct_merchant_ids
    assert len(distinct) == 3
    assert {sim.merchants.category[int(m[1:])] for m in distinct} <= \
        {"electronics", "jewellery", "travel"}
    legit = defaultdict(list)
    fraud = defaultdict(list)
    for e in events:
        if e.get("merchant_id") in distinct and e["event_type"] == "transaction":
            (fraud if e["attributes"]["is_fraud"] else legit)[e["merchant_id"]].append(e)
    for m in distinct:
        threshold = sim.merchants.distinct[int(m[1:])]
        amounts = [e["amount"] for e in legit[m]]
        assert len(amounts) > 200 and statistics.median(amounts) > 2.5 * threshold
        in_band = sum(0.85 * threshold <= a < threshold for a in amounts) / len(amounts)
        assert in_band < 0.06
        at_night = sum(1 <= (e["event_time"] // HOUR) % 24 < 5 for e in legit[m]) / len(legit[m])
        assert at_night < 0.06
        signature = [e for e in fraud[m] if e["attributes"]["scenario"] == "distinct_merchant"]
        assert signature and all(0.85 * threshold <= e["amount"] < threshold for e in signature)
    # The whole population's fraud is the other way round: larger than the user's habit.
    population = [e["amount"] for e in events if e["attributes"]["scenario"] in
                  ("account_takeover", "stolen_card_spree", "amount_outlier")
                  and e["event_type"] == "transaction"]
    assert statistics.median(population) > 3 * max(sim.merchants.distinct.values())


def test_distinct_merchants_are_an_option():
    base = dict(events=4000, days=7, fraud_rate=0.05, seed=4)
    assert len(simulate(SimConfig(**base, distinct_merchants=1)).distinct_merchant_ids) == 1
    five = simulate(SimConfig(**base, distinct_merchants=5))
    assert len(five.distinct_merchant_ids) == 5
    assert {e["merchant_id"] for e in five.events
            if e["attributes"]["scenario"] == "distinct_merchant"} <= \
        set(five.distinct_merchant_ids)
    # Without the scenario in the mix no merchant is named distinct.
    none = simulate(SimConfig(**base, mix={"card_testing": 1.0}))
    assert none.distinct_merchant_ids == [] and none.summary()["distinct_merchants"] == []


def test_labels_follow_events_with_realistic_delays(events, labels, sim):
    by_id = {e["event_id"]: e for e in events}
    label_times = [lab["label_time"] for lab in labels]
    assert label_times == sorted(label_times)
    maturity = int(sim.config.maturity_days * DAY)
    fraud_delays, sources = [], Counter()
    for lab in labels:
        e = by_id[lab["event_id"]]
        assert e["event_type"] == "transaction"
        assert (lab["user_id"], lab["merchant_id"]) == (e["user_id"], e["merchant_id"])
        assert lab["is_fraud"] == e["attributes"]["is_fraud"]
        delay = lab["label_time"] - e["event_time"]
        if lab["is_fraud"]:
            fraud_delays.append(delay)
            sources[lab["source"]] += 1
        else:
            assert lab["source"] == "maturity" and maturity <= delay < maturity + DAY
    assert min(fraud_delays) >= 1 * DAY and max(fraud_delays) <= 61 * DAY
    assert statistics.median(fraud_delays) > 4 * DAY
    assert set(sources) == {"manual_review", "chargeback"}
    # Every legitimate transaction gets a label; some fraud never does.
    legit_txn = sum(1 for e in events if e["event_type"] == "transaction"
                    and not e["attributes"]["is_fraud"])
    assert sum(1 for lab in labels if not lab["is_fraud"]) == legit_txn
    fraud_txn = sum(1 for e in events if e["event_type"] == "transaction"
                    and e["attributes"]["is_fraud"])
    assert 0.7 * fraud_txn < len(fraud_delays) < fraud_txn


def test_never_confirmed_share_is_an_option():
    all_confirmed = simulate(SimConfig(events=5000, days=7, fraud_rate=0.05,
                                       fraud_unlabelled=0.0, seed=3))
    fraud_txn = sum(1 for e in all_confirmed.events
                    if e["attributes"]["is_fraud"] and e["event_type"] == "transaction")
    assert sum(lab["is_fraud"] for lab in all_confirmed.labels) == fraud_txn
    none = simulate(SimConfig(events=5000, days=7, fraud_rate=0.05, fraud_unlabelled=1.0, seed=3))
    assert not any(lab["is_fraud"] for lab in none.labels)


@pytest.mark.parametrize("kwargs, message", [
    ({"events": 0}, "events"),
    ({"fraud_rate": 0.9}, "fraud_rate"),
    ({"mix": {"phishing": 1.0}}, "unknown scenario"),
    ({"mix": {"card_testing": 0.0}}, "positive weight"),
    ({"distinct_merchants": 0}, "distinct_merchants"),
    ({"distinct_merchants": -1}, "distinct_merchants"),
])
def test_invalid_configurations_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        simulate(SimConfig(**kwargs))


def test_parse_mix_rejects_bad_input():
    with pytest.raises(ValueError, match="NAME=WEIGHT"):
        parse_mix("card_testing")
    with pytest.raises(ValueError, match="not a number"):
        parse_mix("card_testing=lots")


def test_cli_writes_events_and_labels(tmp_path):
    from stream.cli import main

    ev, lab = tmp_path / "ev.jsonl.gz", tmp_path / "lab.jsonl.gz"
    result = CliRunner().invoke(main, ["simulate", "--events", "2000", "--days", "3",
                                       "--fraud-rate", "0.02", "--mix", "stolen_card_spree=1",
                                       "--seed", "9", "--out", str(ev), "--labels-out", str(lab)])
    assert result.exit_code == 0, result.output
    assert "wrote 2,000 events" in result.output
    with gzip.open(ev, "rb") as fh:
        rows = [wire.loads(line) for line in fh]
    assert len(rows) == 2000
    assert Counter(r["attributes"]["scenario"] for r in rows)["stolen_card_spree"] == 40
    assert gzip.open(lab, "rb").read().count(b"\n") > 1500
    again = tmp_path / "again.jsonl.gz"
    CliRunner().invoke(main, ["simulate", "--events", "2000", "--days", "3", "--fraud-rate",
                              "0.02", "--mix", "stolen_card_spree=1", "--seed", "9", "-q",
                              "--out", str(again)])
    assert again.read_bytes() == ev.read_bytes()


def test_few_merchants_still_simulate_every_scenario():
    # A scenario asks for merchants of given categories; with very few merchants a category can
    # be empty, and any merchant then stands in rather than the generator failing.
    from stream.simulate import SimConfig, simulate

    for merchants in (1, 2, 5):
        sim = simulate(SimConfig(events=2000, merchants=merchants, fraud_rate=0.05, seed=3))
        events = list(sim.iter_events())
        assert len(events) == 2000
        assert len({e["merchant_id"] for e in events if e.get("merchant_id")}) <= merchants
