"""A chain of keyed stages: which features each stage computes and which topics connect them.

Stage 0 reads the events topic (keyed by its key field, ``user_id`` by default). Every later stage
reads an internal repartition topic, keyed by its own key field, into which the previous stage
forwards each event together with the features computed so far. The last stage scores and
produces to the scores topic. Each stage keeps its state in a store per partition, mirrored to a
compacted changelog topic.

Features are placed on the first stage whose key field is part of the feature's entity, so every
entity's events meet in one partition. Entities that contain no stage key (``card_id``,
``device_id``, ``ip`` with the default chain) are computed in stage 0: there they see the events
of that card/device/ip *within the user's partition* -- exact when an identifier belongs to one
user, an under-count when several users share it. Add a stage keyed by that field for exact
counts. Event-level features (calendar, amount) are computed in the last stage.

Labels go through the last stage (where the scored vectors are kept for learning) and through any
other stage with label-aware features; a label-aware feature on stage 0 is a configuration error,
since labels are keyed by merchant and stage 0 reads the external events topic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from features.definitions import LABEL_AGGREGATIONS, Feature, FeatureSet
from stream.exceptions import ConfigError
from stream.settings import Settings
from stream.topics import TopicSpec

__all__ = ["Stage", "Topology", "DEFAULT_STAGE_KEYS"]

DEFAULT_STAGE_KEYS = ("user_id", "merchant_id")


@dataclass(frozen=True)
class Stage:
    index: int
    name: str
    key_field: str
    features: FeatureSet | None
    input_topic: str
    changelog_topic: str
    receives_labels: bool

    @property
    def feature_names(self) -> list[str]:
        return self.features.names if self.features else []


@dataclass(frozen=True)
class Topology:
    stages: tuple[Stage, ...]
    settings: Settings = field(repr=False)

    @classmethod
    def build(cls, settings: Settings, feature_set: FeatureSet,
              stage_keys: tuple[str, ...] = DEFAULT_STAGE_KEYS) -> "Topology":
        if not stage_keys:
            raise ConfigError("stages: at least one stage key is needed")
        if len(set(stage_keys)) != len(stage_keys):
            raise ConfigError(f"stages: keys must differ, got {stage_keys}")
        per_stage: list[list[Feature]] = [[] for _ in stage_keys]
        last = len(stage_keys) - 1
        for f in feature_set.features:
            entity = tuple(f.entity or ())
            if not entity:
                per_stage[last].append(f)
                continue
            target = next((i for i, k in enumerate(stage_keys) if k in entity), 0)
            per_stage[target].append(f)
        app = settings.group_id
        stages = []
        for i, key in enumerate(stage_keys):
            name = key[:-3] if key.endswith("_id") else key
            feats = per_stage[i]
            label_aware = any(f.agg in LABEL_AGGREGATIONS for f in feats)
            if label_aware and i == 0 and last > 0:
                bad = [f.name for f in feats if f.agg in LABEL_AGGREGATIONS]
                raise ConfigError(f"label-aware features {bad} fall on the first stage "
                                  f"({key}); give them an entity of a later stage")
            fs = (FeatureSet(tuple(feats), grace=feature_set.grace, ttl=feature_set.ttl,
                             distinct_capacity=feature_set.distinct_capacity) if feats else None)
            stages.append(Stage(
                index=i,
                name=name,
                key_field=key,
                features=fs,
                input_topic=settings.topic_events if i == 0 else f"{app}.{name}.repartition",
                changelog_topic=f"{app}.{name}.changelog",
                receives_labels=(i == last) or label_aware,
            ))
        return cls(tuple(stages), settings)

    @property
    def last(self) -> Stage:
        return self.stages[-1]

    def internal_topics(self) -> list[TopicSpec]:
        """Repartition and changelog topics, partitioned like the events topic."""
        s = self.settings
        specs = []
        for st in self.stages:
            if st.index > 0:
                specs.append(TopicSpec(st.input_topic, s.partitions, s.replication_factor,
                                       {"cleanup.policy": "delete",
                                        "retention.ms": str(s.events_retention_ms)}))
            specs.append(TopicSpec(st.changelog_topic, s.partitions, s.replication_factor,
                                   {"cleanup.policy": "compact",
                                    "min.compaction.lag.ms": "0",
                                    "segment.ms": str(6 * 3600 * 1000)}))
        return specs

    def stage_for_topic(self) -> dict[str, Stage]:
        return {st.input_topic: st for st in self.stages}
