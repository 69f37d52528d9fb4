"""The CBR rules a vault request must satisfy, as pure checks that raise before anything is written."""
from __future__ import annotations

import re
from typing import Sequence

from cbr_common import request_checks
from cbr_vault.domain import errors
from cbr_vault.domain.model import CONSISTENT_LEVELS, OBJECT_TYPES, PROTECT_TYPES, Tag

NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_DESCRIPTION = 255
GIB = 1024 ** 3
MIN_SIZE_GB, MAX_SIZE_GB = 1, 10_485_760
MAX_RESOURCES = 256
MAX_TAGS = 20
MAX_TAG_KEY, MAX_TAG_VALUE = 36, 43
TAG_FORBIDDEN = set("=*<>\\,|/") | {chr(c) for c in range(32)}


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name or ""):
        raise errors.InvalidVaultNameError(
            "vault name must be 1-64 characters of letters, digits, '_' and '-'")
    return name


def check_description(description: str) -> str:
    if len(description) > MAX_DESCRIPTION:
        raise errors.InvalidDescriptionError(f"description is longer than {MAX_DESCRIPTION} characters")
    if any(ord(c) < 32 and c not in "\t\n" for c in description):
        raise errors.InvalidDescriptionError("description contains control characters")
    return description


def check_size_gb(size_gb: int) -> int:
    if not MIN_SIZE_GB <= size_gb <= MAX_SIZE_GB:
        raise errors.InvalidCapacityError(f"size_gb must be {MIN_SIZE_GB}..{MAX_SIZE_GB}, got {size_gb}")
    return size_gb


def expanded_size_gb(size_gb: int, used_bytes: int) -> int:
    """The capacity auto-expansion gives a vault of size_gb holding used_bytes: 1.25 times, rounded up, step by
    step until it holds them, never above MAX_SIZE_GB. A vault that holds them already keeps its size."""
    while size_gb * GIB < used_bytes and size_gb < MAX_SIZE_GB:
        size_gb = min(-(-size_gb * 5 // 4), MAX_SIZE_GB)  # ceil(size_gb * 1.25) in integers
    return size_gb


def check_types(object_type: str, protect_type: str, consistent_level: str) -> None:
    if object_type not in OBJECT_TYPES:
        raise errors.InvalidObjectTypeError("object_type must be server, disk or turbo")
    if protect_type not in PROTECT_TYPES:
        raise errors.InvalidProtectTypeError("protect_type must be backup or replication")
    if consistent_level not in CONSISTENT_LEVELS:
        raise errors.InvalidConsistencyError("consistent_level must be crash_consistent or app_consistent")
    if consistent_level == "app_consistent" and object_type != "server":
        raise errors.InvalidConsistencyError("app_consistent is only for server vaults")


def check_threshold(threshold: int) -> int:
    if not 1 <= threshold <= 100:
        raise errors.InvalidThresholdError(f"threshold must be 1..100, got {threshold}")
    return threshold


def check_tag(tag: Tag) -> Tag:
    key, value = tag.key, tag.value
    if not key or len(key) > MAX_TAG_KEY:
        raise errors.InvalidTagError(f"tag key must be 1-{MAX_TAG_KEY} characters")
    if len(value) > MAX_TAG_VALUE:
        raise errors.InvalidTagError(f"tag value of {key!r} is longer than {MAX_TAG_VALUE} characters")
    if key != key.strip():
        raise errors.InvalidTagError(f"tag key {key!r} has leading or trailing spaces")
    for text in (key, value):
        if TAG_FORBIDDEN & set(text):
            raise errors.InvalidTagError(
                f"tag {key!r} contains a forbidden character (= * < > \\ , | / or a control character)")
    return tag


def check_tags(tags: Sequence[Tag], what: str = "tags") -> list[Tag]:
    keys = [check_tag(t).key for t in tags]
    if len(set(keys)) != len(keys):
        raise errors.InvalidTagError(f"{what} repeat a key")
    if len(tags) > MAX_TAGS:
        raise errors.TooManyTagsError(f"at most {MAX_TAGS} {what} per vault")
    return list(tags)


def check_bind_rules(rules: Sequence[Tag]) -> list[Tag]:
    for rule in rules:
        check_tag(rule)
    if len(set(rules)) != len(rules):
        raise errors.InvalidTagError("bind rules repeat a tag")
    if len(rules) > MAX_TAGS:
        raise errors.TooManyTagsError(f"at most {MAX_TAGS} bind rules per vault")
    return list(rules)


def check_id(value: str, what: str) -> str:
    return request_checks.canonical_id(value, what, errors.InvalidIdError)


def check_ids(values: Sequence[str], what: str, limit: int = MAX_RESOURCES) -> list[str]:
    """Distinct ids, at most `limit` (a vault holds at most MAX_RESOURCES resources)."""
    ids = check_id_list(values, what, limit)
    if len(set(ids)) != len(ids):
        raise errors.DuplicateResourceError(f"{what}s repeat an id")
    return ids


def check_id_list(values: Sequence[str], what: str, limit: int = request_checks.MAX_LIST_LIMIT) -> list[str]:
    return request_checks.id_list(values, what, errors.InvalidIdError, limit)


def check_page(limit: int, offset: int) -> tuple[int, int]:
    return request_checks.page_bounds(limit, offset, errors.InvalidPagingError)
