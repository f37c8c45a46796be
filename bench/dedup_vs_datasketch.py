"""Near-duplicate detection: lmforge vs datasketch's MinHash + MinHashLSH, side by side.

Same corpus, same shingles (word 5-grams; character 5-grams for CJK), same num_perm, bands and
rows. Each side is timed from raw texts to duplicate clusters, on one process, interleaved and
repeated; we report the median docs/s, the speed ratio, and recall/precision against the true
Jaccard similarity of known near-duplicate pairs. Then `data prepare` with 1 and 2 workers.

    python bench/dedup_vs_datasketch.py            # writes docs/benchmarks-dedup.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import timed  # noqa: E402
from lmforge.data.dedup import candidate_pairs, connected_components, find_duplicates  # noqa: E402
from lmforge.data.minhash import MinHasher, band_keys, exact_jaccard_pairs  # noqa: E402
from lmforge.data.prepare import make_prepare_config, prepare  # noqa: E402
from tests.data.neardup_corpus import make_corpus  # noqa: E402

_UNIT = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_]+")


def python_shingles(text: str, n: int = 5) -> list[bytes]:
    """The same shingles lmforge hashes (CJK characters or words, n per shingle), as bytes."""
    units = _UNIT.findall(text.lower())
    if not units:
        return []
    if len(units) < n:
        return [" ".join(units).encode()]
    return [" ".join(units[i : i + n]).encode() for i in range(len(units) - n + 1)]


def run_datasketch(texts: list[str], num_perm: int, bands: int, rows: int) -> np.ndarray:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(num_perm=num_perm, params=(bands, rows))
    minhashes = MinHash.bulk([python_shingles(t) for t in texts], num_perm=num_perm)
    for i, m in enumerate(minhashes):
        lsh.insert(i, m)
    u, v = [], []
    for i, m in enumerate(minhashes):
        for j in lsh.query(m):
            if j != i:
                u.append(i)
                v.append(j)
    return connected_components(len(texts), np.asarray(u, dtype=np.int64), np.asarray(v, dtype=np.int64))


def run_lmforge(texts: list[str], num_perm: int, bands: int, rows: int, threshold: float, verify: str) -> np.ndarray:
    hasher = MinHasher(num_perm=num_perm)
    signatures = np.concatenate([hasher.signatures(texts[i : i + 1000]) for i in range(0, len(texts), 1000)])
    if verify == "none":  # datasketch's semantics: every LSH candidate pair is a duplicate
        pairs = candidate_pairs(band_keys(signatures, bands, rows), np.arange(len(texts)))
        return connected_components(len(texts), pairs[:, 0], pairs[:, 1])

    def exact_pairs(pairs: np.ndarray) -> np.ndarray:
        indices = np.unique(pairs)
        hashes, counts = hasher.shingles([texts[int(i)] for i in indices])
        bounds = np.concatenate(([0], np.cumsum(counts)))
        sets = {int(i): np.unique(hashes[bounds[k] : bounds[k + 1]]) for k, i in enumerate(indices)}
        return exact_jaccard_pairs(pairs, sets)

    result = find_duplicates(
        np.arange(len(texts), dtype=np.uint64), signatures, None, threshold=threshold, group_threshold=threshold,
        bands=bands, rows=rows, exact=False, exact_pairs=exact_pairs if verify == "exact" else None,
    )
    return result.cluster


def quality(clusters: np.ndarray, pairs: list[tuple[int, int, float]], n_base: int, threshold: float) -> tuple[float, float, int]:
    """Recall and precision over the known pairs, and how many unrelated base documents got joined."""
    found = [(a, b, j) for a, b, j in pairs if clusters[a] == clusters[b]]
    positives = sum(1 for _, _, j in pairs if j >= threshold)
    tp = sum(1 for _, _, j in found if j >= threshold)
    false_joins = n_base - np.unique(clusters[:n_base]).size
    return tp / max(positives, 1), tp / max(len(found), 1), int(false_joins)


def reviews_texts(limit: int) -> list[str]:
    from lmforge.corpora import get_corpus

    texts = list(dict.fromkeys(r.text for r in get_corpus("reviews").records() if r.text.strip()))
    return texts[:limit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=10_000, help="generated base documents")
    parser.add_argument("--variants", type=int, default=10_000, help="generated near-duplicates of them")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="docs/benchmarks-dedup.md")
    args = parser.parse_args()

    corpus = make_corpus(n_base=args.base, n_variants=args.variants, words=100, seed=7)
    reviews = reviews_texts(17_000)
    threshold, num_perm = 0.8, 128
    # datasketch's own choice of (bands, rows) for threshold 0.8 and 128 permutations, and lmforge's default.
    from datasketch import MinHashLSH

    ds_params = (MinHashLSH(threshold=threshold, num_perm=num_perm).b, MinHashLSH(threshold=threshold, num_perm=num_perm).r)
    settings = [(ds_params, "none"), (ds_params, "signature"), ((42, 3), "exact")]
    rows_out = []
    for name, texts, pairs in (("generated English-like, 100 words", corpus.texts, corpus.pairs), ("real Chinese reviews", reviews, None)):
        for (bands, rows), verify in settings:
            ours_s, ours_clusters = timed(lambda: run_lmforge(texts, num_perm, bands, rows, threshold, verify), args.repeats)
            theirs_s, theirs_clusters = timed(lambda: run_datasketch(texts, num_perm, bands, rows), args.repeats)
            row = {
                "corpus": name, "docs": len(texts), "bands x rows": f"{bands} x {rows}", "lmforge verify": verify,
                "lmforge docs/s": len(texts) / ours_s, "datasketch docs/s": len(texts) / theirs_s, "speedup": theirs_s / ours_s,
            }
            if pairs is not None:
                row["lmforge recall/precision/false joins"] = quality(ours_clusters, pairs, args.base, threshold)
                row["datasketch recall/precision/false joins"] = quality(theirs_clusters, pairs, args.base, threshold)
            rows_out.append(row)
            print(json.dumps(row), flush=True)

    scaling = worker_scaling(corpus.texts, args.repeats)
    print(json.dumps(scaling), flush=True)
    write_table(Path(args.out), rows_out, scaling, args)


def worker_scaling(texts: list[str], repeats: int) -> list[dict]:
    """Whole `data prepare` runs with 1 and 2 workers, interleaved: People's Daily with the clean
    preset (rule-heavy) and the generated corpus with the labelled preset (dedup-heavy)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "corpus.jsonl"
        source.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        for name, path, preset, n_docs in (
            ("People's Daily 1998, clean preset", "corpus:peoples-daily", "clean", 19_484),
            ("generated near-duplicates, labelled preset", str(source), "labelled", len(texts)),
        ):
            times: dict[int, list[float]] = {1: [], 2: []}
            for _ in range(repeats):
                for workers in (1, 2):
                    config = make_prepare_config({"input": {"paths": [path]}, "out": f"{tmp}/out{workers}",
                                                  "preset": preset, "workers": workers, "progress": False})
                    start = time.perf_counter()
                    prepare(config)
                    times[workers].append(time.perf_counter() - start)
            one, two = (n_docs / statistics.median(times[w]) for w in (1, 2))
            rows.append({"corpus": name, "workers=1 docs/s": one, "workers=2 docs/s": two, "scaling": two / one})
    return rows


def write_table(path: Path, rows: list[dict], scaling: list[dict], args: argparse.Namespace) -> None:
    import datasketch

    lines = [
        "# Near-duplicate detection: lmforge vs datasketch",
        "",
        f"Measured with `python bench/dedup_vs_datasketch.py --base {args.base} --variants {args.variants} --repeats {args.repeats}`",
        f"on {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), Python {platform.python_version()},",
        f"numpy {np.__version__}, datasketch {datasketch.__version__}; one process; median of {args.repeats} interleaved runs.",
        "Both sides go from raw texts to duplicate clusters with the same shingles and 128 permutations.",
        "lmforge verify: `none` = every LSH candidate is a duplicate (datasketch's semantics), `signature` =",
        "candidates kept if their estimated Jaccard >= 0.8, `exact` = lmforge's default (exact Jaccard near thresholds).",
        "Recall/precision are over the known generated pairs (truth: exact word-5-gram Jaccard >= 0.8);",
        "false joins = unrelated base documents put into one cluster.",
        "",
        "| corpus | docs | bands x rows | lmforge verify | lmforge docs/s | datasketch docs/s | speedup | lmforge recall / precision / false joins | datasketch recall / precision / false joins |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        q1 = r.get("lmforge recall/precision/false joins")
        q2 = r.get("datasketch recall/precision/false joins")
        fmt = (lambda q: f"{q[0]:.3f} / {q[1]:.3f} / {q[2]}" if q else "n/a (no ground truth)")
        lines.append(
            f"| {r['corpus']} | {r['docs']:,} | {r['bands x rows']} | {r['lmforge verify']} | {r['lmforge docs/s']:,.0f} | "
            f"{r['datasketch docs/s']:,.0f} | {r['speedup']:.1f}x | {fmt(q1)} | {fmt(q2)} |"
        )
    lines += [
        "",
        "Worker scaling of the whole `data prepare` stage (read, clean, filter, hash, dedup, split, write),",
        f"median of {args.repeats} interleaved runs; the machine's load average when the run ended: {os.getloadavg()[0]:.1f}:",
        "",
        "| corpus | workers=1 docs/s | workers=2 docs/s | ratio |",
        "|---|---|---|---|",
        *[f"| {r['corpus']} | {r['workers=1 docs/s']:,.0f} | {r['workers=2 docs/s']:,.0f} | {r['scaling']:.2f}x |" for r in scaling],
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
