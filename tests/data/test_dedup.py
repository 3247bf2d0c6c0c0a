import random

from llmops.config import DedupConfig
from llmops.data import store
from llmops.data.dedup import choose_representative, deduplicate, exact_key, run_dedup

WORDS = ("python assert statement expression debugging program raise error value module class function "
         "object attribute method import package name scope variable binding loop iterator generator").split()


def _text(seed: int, n: int = 300) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _doc(url: str, text: str, canonical: str | None = None, via: str = "link") -> store.CleanDoc:
    return store.CleanDoc(id=store.short_hash(url), url=url, canonical_url=canonical, title=None, author=None,
                          date_published=None, text=text, source="x", fetched_at=None, discovered_via=via,
                          payload_sha256=None, n_chars=len(text), n_words=len(text.split()), n_sentences=1,
                          sentences=[text], lang="en", lang_score=1.0)


def _near(text: str) -> str:
    words = text.split()
    return " ".join(words[:100] + ["CHANGED"] + words[101:])


def test_exact_key_ignores_case_and_whitespace():
    assert exact_key("Hello   World\n") == exact_key("hello world")
    assert exact_key("hello world") != exact_key("hello, world")


def test_exact_and_near_duplicates_removed_originals_kept():
    a, b = _text(1), _text(2)
    docs = [
        _doc("http://s/docs/a.html", a, canonical="http://s/docs/a.html", via="sitemap"),
        _doc("http://s/mirror/docs/a.html", "  " + a.upper() + " "),  # exact after normalisation
        _doc("http://s/print/a.html", _near(a), canonical="http://s/docs/a.html"),
        _doc("http://s/docs/b.html", b, canonical="http://s/docs/b.html", via="sitemap"),
        _doc("http://s/docs/c.html", _text(3), canonical="http://s/docs/c.html"),
    ]
    kept, removed, clusters = deduplicate(docs, DedupConfig())
    assert sorted(d["url"] for d in kept) == ["http://s/docs/a.html", "http://s/docs/b.html", "http://s/docs/c.html"]
    by_url = {r.url: r for r in removed}
    assert by_url["http://s/mirror/docs/a.html"].reason == "exact_duplicate"
    assert by_url["http://s/print/a.html"].reason == "near_duplicate"
    assert (by_url["http://s/print/a.html"].similarity or 0) > 0.9
    assert all(r.duplicate_of == "http://s/docs/a.html" for r in removed)
    assert len(clusters) == 1 and len(clusters[0].members) == 2
    rep = next(d for d in kept if d["url"].endswith("a.html"))
    assert rep["dup_count"] == 3


def test_unrelated_documents_are_not_merged():
    docs = [_doc(f"http://s/{i}", _text(100 + i)) for i in range(30)]
    kept, removed, _ = deduplicate(docs, DedupConfig())
    assert len(kept) == 30 and removed == []


def test_representative_order():
    orig = _doc("http://s/docs/a.html", "x", canonical="http://s/docs/a.html")
    printed = _doc("http://s/print/a.html", "x y", canonical="http://s/docs/a.html")
    mirror = _doc("http://s/mirror/docs/a.html", "x")
    assert choose_representative([mirror, printed, orig]) is orig
    # without canonical links, the sitemap wins, then the shallower path
    m1 = _doc("http://s/a/b/c.html", "x", via="sitemap")
    m2 = _doc("http://s/c.html", "x")
    assert choose_representative([m2, m1]) is m1
    assert choose_representative([_doc("http://s/a/b/c.html", "x"), m2]) is m2


def test_run_dedup_is_independent_of_shard_order(tmp_path):
    a = _text(7)
    shard1 = [_doc("http://s/mirror/a.html", a), _doc("http://s/b.html", _text(8))]
    shard2 = [_doc("http://s/a.html", a)]
    p1, p2 = tmp_path / "1.parquet", tmp_path / "2.parquet"
    store.write_docs(shard1, p1, store.CLEAN_SCHEMA)
    store.write_docs(shard2, p2, store.CLEAN_SCHEMA)
    out1, out2 = tmp_path / "o1", tmp_path / "o2"
    out1.mkdir()
    out2.mkdir()
    s1 = run_dedup([p1, p2], out1, DedupConfig())
    s2 = run_dedup([p2, p1], out2, DedupConfig())
    assert s1 == s2 and s1.exact_duplicates_removed == 1
    assert store.read_docs(out1 / "corpus.parquet") == store.read_docs(out2 / "corpus.parquet")
    assert store.read_dropped(out1 / "dropped.jsonl")[0].url == "http://s/mirror/a.html"


def test_same_shard_named_twice_is_read_once(tmp_path):
    from llmops.config import load_config
    from llmops.data.pipeline import dedup_stage

    shard = tmp_path / "docs.parquet"
    store.write_docs([_doc("http://s/a.html", _text(1)), _doc("http://s/b.html", _text(2))], shard,
                     store.CLEAN_SCHEMA)
    result = dedup_stage(load_config(environ={"LLMOPS_HOME": str(tmp_path)}), [shard, shard])
    assert result.summary["docs_in"] == 2 and result.summary["exact_duplicates_removed"] == 0
