"""A notification's readable lines (functions/notify.py) say values as a person reads them: no Python lists, dicts,
True/False or None."""

from __future__ import annotations

import re

from functions.notify import readable


def test_lists_mappings_and_booleans_read_as_words() -> None:
    text = readable(
        {
            "instance": "demo",
            "zero_downtime": False,
            "unlocked": True,
            "cleanup": ["backup task cancelled", "Bitbucket unlocked"],
            "artifacts": [
                {"kind": "ebs-snapshot", "id": "snap-0123", "part": "home", "details": {"arn": ""}},
                {"kind": "rds-snapshot", "id": "demo-1", "part": "database"},
            ],
            "restore": {"instance_id": "restored-demo", "endpoint": None},
            "skipped": None,
            "nothing": [],
        }
    )
    assert text.splitlines() == [
        "instance: demo",
        "zero_downtime: no",
        "unlocked: yes",
        "cleanup: backup task cancelled; Bitbucket unlocked",
        "artifacts:",
        "  - kind ebs-snapshot, id snap-0123, part home",
        "  - kind rds-snapshot, id demo-1, part database",
        "restore: instance_id restored-demo",
    ]
    assert not re.search(r"[\[\]{}']|\bTrue\b|\bFalse\b|\bNone\b", text), text
