"""No firm id reaches a published file, whatever its form (the runner's safety net)."""
from __future__ import annotations

from msme_eval.report.redact import REDACTED, firm_id_redactor


def test_every_id_form_is_redacted_where_it_can_be_recognised() -> None:
    redact, _ = firm_id_redactor(["MYS0538", "KH/2019/001", "10234", "Warung Sari 7", "7A"])
    text, n = redact("cohort with one unit (firm_id = 'MYS0538'); dropped ['10234', 'KH/2019/001'] "
                     "and Warung Sari 7; unit: 7A; firm_id=10234.")
    assert "MYS0538" not in text and "KH/2019/001" not in text and "Warung Sari" not in text
    assert "10234" not in text and "7A" not in text
    assert n == 6 and text.count(REDACTED) == 6


def test_statistics_and_images_are_left_alone() -> None:
    redact, _ = firm_id_redactor(["10234", "7A", "BRN001"])
    stats = "n = 10234 firms; ATT 7A? no: 0.7; BRN0011 is another firm; data:image/png;base64,QlJOMDAx"
    text, n = redact(stats)
    assert text == stats and n == 0
