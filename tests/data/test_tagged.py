"""Tagged rows: People's Daily words + part-of-speech tags to character BIO tags, on real lines."""

from __future__ import annotations

from lmforge.data.tagged import pos_to_bio
from lmforge.eval.metrics import tag_spans


def test_peoples_daily_pos_to_bio_on_real_lines():
    from lmforge.corpora import get_corpus

    records = get_corpus("peoples-daily-pos").records()
    record = next(r for r in records if "nr" in r.fields["pos"] and "nt" in r.fields["pos"])
    words, pos = record.fields["words"], record.fields["pos"]
    tags = pos_to_bio(words, pos)
    assert len(tags) == len(record.text)
    spans = tag_spans(tags)
    names = {(k, record.text[s:e]) for k, s, e in spans}
    assert ("ORG", "中共中央") in names and ("PER", "江泽民") in names  # surname + given name merged
    assert {k for k, _, _ in spans} <= {"PER", "LOC", "ORG"}
    assert pos_to_bio(["中国", "北京"], ["ns", "ns"]) == [
        "B-LOC",
        "I-LOC",
        "B-LOC",
        "I-LOC",
    ]  # places not merged
    assert pos_to_bio(["邓", "小平", "同志"], ["nr", "nr", "n"]) == ["B-PER", "I-PER", "I-PER", "O", "O"]
