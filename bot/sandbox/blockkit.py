"""Block Kit checks the stand-in applies the way Slack's servers do.

slack_sdk's models validate most limits client-side, but a bot that builds dicts by hand (or splits a long
list badly) only finds out from Slack's `invalid_blocks` error. The stand-in must fail the same way, with
Slack's `response_metadata.messages` style (`[ERROR] … [json-pointer:/blocks/3/text]`).
"""

from __future__ import annotations

from typing import Any

MESSAGE_BLOCK_LIMIT = 50
MODAL_BLOCK_LIMIT = 100
MESSAGE_TEXT_LIMIT = 40_000

KNOWN_BLOCK_TYPES = frozenset(
    {
        "actions",
        "context",
        "context_actions",
        "divider",
        "file",
        "header",
        "image",
        "input",
        "markdown",
        "rich_text",
        "section",
        "table",
        "video",
    }
)
_TEXT_TYPES = frozenset({"plain_text", "mrkdwn"})


def _err(message: str, pointer: str) -> str:
    return f"[ERROR] {message} [json-pointer:{pointer}]"


def _check_text(obj: Any, pointer: str, limit: int, *, plain_only: bool = False) -> list[str]:
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        return [_err("must provide an object with a string `text`", pointer)]
    kind = obj.get("type")
    allowed = {"plain_text"} if plain_only else _TEXT_TYPES
    if kind not in allowed:
        return [_err(f"must be one of {sorted(allowed)}", f"{pointer}/type")]
    if len(obj["text"]) > limit:
        return [_err(f"must be less than {limit + 1} characters", f"{pointer}/text")]
    if not obj["text"]:
        return [_err("must be more than 0 characters", f"{pointer}/text")]
    return []


def _check_element(element: Any, pointer: str) -> list[str]:
    if not isinstance(element, dict) or not isinstance(element.get("type"), str):
        return [_err("must provide an object with a `type`", pointer)]
    errors: list[str] = []
    action_id = element.get("action_id")
    if isinstance(action_id, str) and len(action_id) > 255:
        errors.append(_err("must be less than 256 characters", f"{pointer}/action_id"))
    if element["type"] == "button":
        errors += _check_text(element.get("text"), f"{pointer}/text", 75, plain_only=True)
        value = element.get("value")
        if isinstance(value, str) and len(value) > 2000:
            errors.append(_err("must be less than 2001 characters", f"{pointer}/value"))
    options = element.get("options")
    if isinstance(options, list):
        if len(options) > 100:
            errors.append(_err("must be less than 101 items", f"{pointer}/options"))
        for i, option in enumerate(options):
            value = option.get("value") if isinstance(option, dict) else None
            if isinstance(value, str) and len(value) > 150:
                errors.append(_err("must be less than 151 characters", f"{pointer}/options/{i}/value"))
    return errors


def _check_block(block: Any, pointer: str) -> list[str]:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        return [_err("must provide an object with a `type`", pointer)]
    kind = block["type"]
    if kind not in KNOWN_BLOCK_TYPES:
        return [_err(f"unsupported type: {kind}", f"{pointer}/type")]
    errors: list[str] = []
    block_id = block.get("block_id")
    if block_id is not None and (not isinstance(block_id, str) or len(block_id) > 255):
        errors.append(_err("must be a string of less than 256 characters", f"{pointer}/block_id"))
    if kind == "section":
        if "text" not in block and "fields" not in block:
            errors.append(_err("must provide either `text` or `fields`", pointer))
        if "text" in block:
            errors += _check_text(block["text"], f"{pointer}/text", 3000)
        fields = block.get("fields")
        if fields is not None:
            if not isinstance(fields, list) or len(fields) > 10:
                errors.append(_err("must be an array of less than 11 items", f"{pointer}/fields"))
            else:
                for i, field in enumerate(fields):
                    errors += _check_text(field, f"{pointer}/fields/{i}", 2000)
        if "accessory" in block:
            errors += _check_element(block["accessory"], f"{pointer}/accessory")
    elif kind == "header":
        errors += _check_text(block.get("text"), f"{pointer}/text", 150, plain_only=True)
    elif kind == "actions":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= 25:
            errors.append(_err("must be an array of 1 to 25 items", f"{pointer}/elements"))
        else:
            seen: set[str] = set()
            for i, element in enumerate(elements):
                errors += _check_element(element, f"{pointer}/elements/{i}")
                action_id = element.get("action_id") if isinstance(element, dict) else None
                if isinstance(action_id, str):
                    if action_id in seen:
                        errors.append(_err("duplicate action_id", f"{pointer}/elements/{i}/action_id"))
                    seen.add(action_id)
    elif kind == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
            errors.append(_err("must be an array of 1 to 10 items", f"{pointer}/elements"))
    elif kind == "input":
        errors += _check_text(block.get("label"), f"{pointer}/label", 2000, plain_only=True)
        if not isinstance(block.get("element"), dict):
            errors.append(_err("must provide an `element`", f"{pointer}/element"))
        else:
            errors += _check_element(block["element"], f"{pointer}/element")
    return errors


def validate_blocks(blocks: Any, *, limit: int = MESSAGE_BLOCK_LIMIT, pointer: str = "/blocks") -> list[str]:
    """Slack-style error messages for `blocks`; an empty list means Slack would accept them."""
    if not isinstance(blocks, list):
        return [_err("must be an array", pointer)]
    if len(blocks) > limit:
        return [_err(f"must be less than {limit + 1} items", pointer)]
    errors: list[str] = []
    block_ids: set[str] = set()
    for i, block in enumerate(blocks):
        errors += _check_block(block, f"{pointer}/{i}")
        block_id = block.get("block_id") if isinstance(block, dict) else None
        if isinstance(block_id, str):
            if block_id in block_ids:
                errors.append(_err("duplicate block_id", f"{pointer}/{i}/block_id"))
            block_ids.add(block_id)
    return errors


def validate_modal(view: Any) -> list[str]:
    """Errors Slack's `views.open`/`update`/`push` report as `invalid_arguments` for a modal."""
    if not isinstance(view, dict):
        return [_err("must be an object", "/view")]
    errors: list[str] = []
    if view.get("type") != "modal":
        errors.append(_err("must be `modal`", "/view/type"))
    errors += _check_text(view.get("title"), "/view/title", 24, plain_only=True)
    for key in ("submit", "close"):
        if view.get(key) is not None:
            errors += _check_text(view[key], f"/view/{key}", 24, plain_only=True)
    metadata = view.get("private_metadata")
    if isinstance(metadata, str) and len(metadata) > 3000:
        errors.append(_err("must be less than 3001 characters", "/view/private_metadata"))
    callback_id = view.get("callback_id")
    if isinstance(callback_id, str) and len(callback_id) > 255:
        errors.append(_err("must be less than 256 characters", "/view/callback_id"))
    errors += validate_blocks(view.get("blocks"), limit=MODAL_BLOCK_LIMIT, pointer="/view/blocks")
    if any(isinstance(b, dict) and b.get("type") == "input" for b in view.get("blocks") or []) and not view.get(
        "submit"
    ):
        errors.append(_err("a view with input blocks must have a `submit` button", "/view/submit"))
    return errors
