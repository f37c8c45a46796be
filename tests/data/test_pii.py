"""PII scrubbing: typed placeholders, counts, and validation that spares look-alikes."""

from __future__ import annotations

from lmforge.data.config import PIIConfig
from lmforge.data.pii import PIIScrubber, valid_cn_id


def scrub(text: str, **options) -> tuple[str, dict]:
    out, counts = PIIScrubber(PIIConfig(enabled=True, **options)).scrub(text)
    return out, dict(counts)


def with_check_digit(first17: str) -> str:
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return first17 + "10X98765432"[sum(int(d) * w for d, w in zip(first17, weights)) % 11]


def test_emails():
    assert scrub("写信给zhang.san+news@mail.example.com.cn或a_b@x.io。") == ("写信给<EMAIL>或<EMAIL>。", {"EMAIL": 2})


def test_chinese_mobile_and_other_phones():
    text = "手机13812345678，或+86 138-1234-5678；座机010-62751234；US (555) 123-4567, +44 20 7946 0958."
    out, counts = scrub(text)
    assert "1381234" not in out and "62751234" not in out and "555" not in out and "7946" not in out
    assert counts == {"PHONE": 5}


def test_chinese_id_needs_a_valid_check_digit():
    good = with_check_digit("11010519491231002")
    bad = good[:-1] + ("0" if good[-1] != "0" else "1")
    assert valid_cn_id(good) and not valid_cn_id(bad)
    out, counts = scrub(f"身份证号{good}，另一个{bad}")
    assert out.startswith("身份证号<CN_ID>，") and bad in out and counts == {"CN_ID": 1}


def test_ip_addresses_and_look_alikes():
    out, counts = scrub("server 192.168.1.20 and 2001:db8::8a2e:370:7334; version 1.2.3.4.5 and 999.1.1.1")
    assert out == "server <IP> and <IP>; version 1.2.3.4.5 and 999.1.1.1" and counts == {"IP": 2}


def test_ordinary_numbers_survive():
    text = "1998年1月1日, 2023-2024 season, order 12345, price 3.14, ISBN 978-7-111"
    assert scrub(text) == (text, {})


def test_types_can_be_switched_off():
    assert scrub("mail me: a@b.com", email=False) == ("mail me: a@b.com", {})
