"""Dedup: exact (hash of normalised text) and near-duplicate (MinHash + LSH) removal.

Near-duplicates are found with datasketch's MinHash over word n-gram shingles and
its LSH index; candidate pairs are joined into clusters with a union-find, and each
cluster keeps one representative. Which one is a judgement call that real crawls
answer with the page's own signals, in this order:

1. the page that is its own ``rel=canonical`` (mirrors and print views point away);
2. the page other members name as canonical;
3. a page listed in the sitemap (sites list originals, not print views);
4. the shallower URL path, then the longer text (the complete version), then the URL.

Removed documents are written with their cluster, the kept representative and the
estimated similarity; ``clusters.json`` lists every cluster.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

from llmops.config import DedupConfig
from llmops.data import store
from llmops.data.store import CleanDoc, CorpusDoc
from llmops.records.crawl import DedupDropped
from llmops.records.data import ClusterMember, DedupSummary, DuplicateCluster

log = logging.getLogger(__name__)
_WORD = re.compile(r"\w+", re.UNICODE)


def exact_key(text: str) -> str:
    """Hash of the text with case and whitespace differences removed."""
    return hashlib.sha256(" ".join(text.casefold().split()).encode()).hexdigest()


def shingles(text: str, n: int) -> set[str]:
    words = _WORD.findall(text.casefold())
    if len(words) <= n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: str, b: str, n: int) -> float:
    """Exact Jaccard similarity of two texts' ``n``-word shingle sets: what MinHash estimates.

    The stage itself only estimates it (exact pairwise comparison does not scale); this is
    for whatever must agree with the stage's measure, such as the demo site's planted
    near-duplicates.
    """
    sa, sb = shingles(a, n), shingles(b, n)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _url_depth(url: str) -> int:
    from urllib.parse import urlsplit

    return len([p for p in urlsplit(url).path.split("/") if p])


def choose_representative(members: list[CleanDoc]) -> CleanDoc:
    """Pick the original of a duplicate cluster (see the module docstring for the order)."""
    urls = {m["url"] for m in members}
    named = {m["canonical_url"] for m in members if m["canonical_url"] in urls and m["canonical_url"] != m["url"]}

    def rank(m: CleanDoc) -> tuple[bool, bool, bool, int, int, str]:
        return (
            m["canonical_url"] != m["url"],
            m["url"] not in named,
            m["discovered_via"] != "sitemap",
            _url_depth(m["url"]),
            -len(m["text"]),
            m["url"],
        )

    return min(members, key=rank)


def find_clusters(docs: list[CleanDoc],
                  cfg: DedupConfig) -> tuple[list[list[int]], dict[tuple[int, int], float], list[str]]:
    """Clusters of duplicate documents (indices into ``docs``), pair similarities, exact keys."""
    from datasketch import MinHash, MinHashLSH

    uf = _UnionFind(len(docs))
    keys = [exact_key(d["text"]) for d in docs]
    first_with_key: dict[str, int] = {}
    similarity: dict[tuple[int, int], float] = {}
    for i, key in enumerate(keys):
        if key in first_with_key:
            uf.union(first_with_key[key], i)
            similarity[(first_with_key[key], i)] = 1.0
        else:
            first_with_key[key] = i

    lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)
    minhashes: dict[int, MinHash] = {}
    for i in first_with_key.values():  # exact copies add nothing to near-dup search
        mh = MinHash(num_perm=cfg.num_perm, seed=cfg.seed)
        mh.update_batch([s.encode() for s in shingles(docs[i]["text"], cfg.shingle_words)])
        for j in lsh.query(mh):
            est = mh.jaccard(minhashes[j])
            if est >= cfg.threshold:  # LSH buckets give candidates; the estimate confirms
                uf.union(i, j)
                similarity[(j, i)] = est
        lsh.insert(i, mh)
        minhashes[i] = mh

    groups: dict[int, list[int]] = {}
    for i in range(len(docs)):
        groups.setdefault(uf.find(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1], similarity, keys


def deduplicate(docs: list[CleanDoc],
                cfg: DedupConfig) -> tuple[list[CorpusDoc], list[DedupDropped], list[DuplicateCluster]]:
    """Returns (kept corpus rows, removed records, cluster reports)."""
    clusters, similarity, keys = find_clusters(docs, cfg)
    removed_by: dict[int, DedupDropped] = {}
    cluster_reports: list[DuplicateCluster] = []
    size_of: dict[int, tuple[str, int]] = {}
    for members in clusters:
        rep = choose_representative([docs[i] for i in members])
        rep_index = next(i for i in members if docs[i] is rep)
        report = DuplicateCluster(cluster_id=rep["id"], representative=rep["url"], members=[])
        for i in members:
            size_of[i] = (rep["id"], len(members))
            if i == rep_index:
                continue
            exact = keys[i] == keys[rep_index]
            sim = 1.0 if exact else similarity.get((min(i, rep_index), max(i, rep_index)))
            record = DedupDropped(id=docs[i]["id"], url=docs[i]["url"],
                                  reason="exact_duplicate" if exact else "near_duplicate",
                                  duplicate_of=rep["url"], cluster_id=rep["id"],
                                  similarity=None if sim is None else round(sim, 4))
            removed_by[i] = record
            report.members.append(ClusterMember(url=record.url, reason=record.reason, similarity=record.similarity))
        cluster_reports.append(report)

    kept: list[CorpusDoc] = []
    for i, doc in enumerate(docs):
        if i in removed_by:
            continue
        cluster, count = size_of.get(i, (doc["id"], 1))
        kept.append({**doc, "text_sha256": keys[i], "dup_cluster": cluster, "dup_count": count})
    removed = [removed_by[i] for i in sorted(removed_by)]
    cluster_reports.sort(key=lambda c: c.representative)
    return kept, removed, cluster_reports


def run_dedup(docs_paths: list[Path], out_dir: Path, cfg: DedupConfig) -> DedupSummary:
    """Deduplicate the union of cleaned shards into ``out_dir/corpus.parquet``."""
    docs = store.read_docs(sorted(Path(p) for p in docs_paths), CleanDoc)
    docs.sort(key=lambda d: d["url"])  # shard order must not change which copy is kept
    kept, removed, clusters = deduplicate(docs, cfg)
    store.write_docs(kept, out_dir / "corpus.parquet", schema=store.CORPUS_SCHEMA)
    store.write_dropped(removed, out_dir / "dropped.jsonl")
    (out_dir / "clusters.json").write_text(json.dumps([c.model_dump() for c in clusters], indent=2))
    by_reason = store.count_by(removed, "reason")
    summary = DedupSummary(
        docs_in=len(docs),
        docs_out=len(kept),
        exact_duplicates_removed=by_reason.get("exact_duplicate", 0),
        near_duplicates_removed=by_reason.get("near_duplicate", 0),
        clusters=len(clusters),
        duplicate_rate=round(len(removed) / len(docs), 4) if docs else 0.0,
        tokens_estimate_words=sum(d["n_words"] for d in kept),
    )
    summary.write(out_dir)
    log.info("dedup: %s", summary)
    return summary
