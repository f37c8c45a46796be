"""Counting for `data prepare` and its report.json: every record read is either kept in a split or
rejected with a reason, and the report proves it (``accounted``)."""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.data.config import PrepareConfig
from lmforge.data.dedup import LABEL_CONFLICT
from lmforge.data.filters import build_rules
from lmforge.data.records import RawRecord
from lmforge.data.split import SPLITS
from lmforge.progress import print_summary
from lmforge.version import __version__

_EXAMPLES = 10
_SNIPPET = 200


@dataclass
class PrepareStats:
    files: list[str]
    preset: str
    labelled: bool
    read: int = 0
    passed_filters: int = 0
    rejected: Counter = field(default_factory=Counter)  # reason -> count
    rejected_by_stage: Counter = field(default_factory=Counter)
    pii: Counter = field(default_factory=Counter)
    pii_documents: int = 0
    split_sizes: Counter = field(default_factory=Counter)
    split_labels: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    largest_clusters: list[tuple[int, int, str]] = field(default_factory=list)  # heap of (size, -id, text)
    conflicts: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    seconds_pass1: float = 0.0
    seconds_total: float = 0.0

    def count_rejection(self, stage: str, reason: str, count: int = 1) -> None:
        self.rejected[reason] += count
        self.rejected_by_stage[stage] += count

    def count_split(self, split: str, label: Any) -> None:
        self.split_sizes[split] += 1
        if self.labelled:
            self.split_labels[split][str(label)] += 1

    def observe_cluster(self, index: int, cluster: int, size: int, status: int, record: RawRecord) -> None:
        """Remember examples for the report: the largest clusters and some label conflicts."""
        if size >= 2 and index == cluster:
            item = (size, -cluster, (record.text or "")[:_SNIPPET])
            if len(self.largest_clusters) < _EXAMPLES:
                heapq.heappush(self.largest_clusters, item)
            else:
                heapq.heappushpop(self.largest_clusters, item)
        if status == LABEL_CONFLICT and (cluster in self.conflicts or len(self.conflicts) < _EXAMPLES):
            members = self.conflicts.setdefault(cluster, [])
            if len(members) < 5:
                members.append({"text": (record.text or "")[:_SNIPPET], "label": record.label,
                                "source": record.source, "line": record.line})

    @property
    def kept(self) -> int:
        return sum(self.split_sizes.values())


def build_report(config: PrepareConfig, stats: PrepareStats, dedup: dict[str, Any]) -> dict[str, Any]:
    rejected_total = sum(stats.rejected.values())
    readable = stats.read - stats.rejected_by_stage["read"]
    rules = [rule.name for rule in build_rules(config.filters)]
    if config.pii.enabled:
        rules.append("pii")
    if config.dedup.exact:
        rules.append("exact_dedup")
    if config.dedup.near:
        rules.append("near_dedup")
    if stats.labelled:
        rules.append("label_conflicts")
    return {
        "lmforge_version": __version__,
        "stage": "data prepare",
        "format_version": 1,
        "preset": stats.preset,
        "rules": rules,
        "inputs": stats.files,
        "counts": {
            "read": stats.read,
            "kept": stats.kept,
            "rejected": rejected_total,
            "accounted": stats.kept + rejected_total == stats.read,
        },
        "funnel": [
            {"step": "read", "documents": stats.read},
            {"step": "readable", "documents": readable},
            {"step": "passed filters", "documents": stats.passed_filters},
            {"step": "deduplicated, conflicts removed", "documents": stats.kept},
        ],
        "rejected_by_stage": dict(stats.rejected_by_stage),
        "rejected_by_reason": dict(stats.rejected.most_common()),
        "pii": {"replacements": dict(stats.pii), "documents": stats.pii_documents},
        "dedup": {
            **dedup,
            "num_perm": config.dedup.num_perm,
            "bands": config.dedup.bands,
            "rows": config.dedup.rows,
            "threshold": config.dedup.threshold,
            "group_threshold": config.split.group_threshold,
            "verify": config.dedup.verify,
            "largest_clusters": [
                {"cluster": -neg_id, "size": size, "text": text}
                for size, neg_id, text in sorted(stats.largest_clusters, reverse=True)
            ],
        },
        "conflicts": {
            "clusters": dedup.get("conflict_clusters", 0),
            "documents": dedup.get("conflict_documents", 0),
            "examples": [{"cluster": c, "members": m} for c, m in stats.conflicts.items()],
        },
        "splits": {
            name: {
                "documents": stats.split_sizes[name],
                **({"labels": dict(sorted(stats.split_labels[name].items()))} if stats.labelled else {}),
            }
            for name in SPLITS
        },
        "timing": {
            "seconds": round(stats.seconds_total, 3),
            "first_pass_seconds": round(stats.seconds_pass1, 3),
            "documents_per_second": round(stats.read / stats.seconds_total, 1) if stats.seconds_total else None,
            "workers": config.workers,
        },
    }


def print_prepare_summary(report: dict[str, Any], out: Path) -> None:
    counts, dedup, splits = report["counts"], report["dedup"], report["splits"]
    rows = [
        ("preset", report["preset"]),
        ("read", f"{counts['read']:,}"),
        ("rejected by filters", f"{report['rejected_by_stage'].get('filter', 0) + report['rejected_by_stage'].get('read', 0):,}"),
        ("exact duplicates removed", f"{dedup['exact_duplicates_removed']:,}"),
        ("near duplicates removed", f"{dedup['near_duplicates_removed']:,}"),
        ("label conflicts quarantined", f"{report['conflicts']['documents']:,} in {report['conflicts']['clusters']:,} clusters"),
        ("PII replaced", f"{sum(report['pii']['replacements'].values()):,}"),
        ("train / validation / test", " / ".join(f"{splits[s]['documents']:,}" for s in SPLITS)),
        ("accounted (kept + rejected == read)", str(counts["accounted"])),
        ("time", f"{report['timing']['seconds']:.1f} s ({report['timing']['documents_per_second'] or 0:,.0f} docs/s)"),
        ("output", str(out)),
    ]
    print_summary("data prepare", rows)
