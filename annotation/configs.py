"""Label Studio labeling configs for each alignloop feedback kind, plus client-side validation.

The Label Studio server accepts annotation values that its config does not allow (a choice "Z", a
rating of 0, a step label on a step that does not exist), so every result read back from Label Studio
must go through :func:`validate_result` before it becomes feedback in the warehouse.

Task data expected by each config (``TASK_DATA_KEYS``; extra keys such as meta ids are kept and ignored
by the UI; use the ``*_task`` builders):

* ``pairwise``:   ``{"prompt": str, "a": str, "b": str}`` + meta ids (e.g. ``prompt_id``, ``response_a_id``,
  ``response_b_id``). Result: ``preference`` in A / B / tie (required); optional ``preference_<aspect>`` in
  A / B / tie per aspect question (by default harmlessness, Safe RLHF's second question); optional ratings 1-5
  ``{helpfulness,harmlessness,honesty}_{a,b}``; optional ``rationale`` text.
* ``ranking``:    ``{"prompt": str, "items": [{"id": str, "title": str, "body": str}, ...]}`` + meta ids.
  Result: ``ranker`` value ``{"ranker": {"ranker": [ids best first]}}`` (the inner key is the Ranker name,
  the default bucket; a permutation of the item ids; an untouched list is submitted in the given order).
* ``binary``:     ``{"prompt": str, "response": str}`` + meta ids. Result: ``thumbs`` in good / bad (required).
* ``step``:       ``{"question": str, "steps": [{"title": "Step 1", "text": str}, ...]}`` + meta ids.
  Result: ``step_label_<i>`` (0-based step index) in positive / neutral / negative, and optional
  ``first_error`` = 1-based number of the first wrong step (PRM800K style: that step is negative and
  no step after it is labelled; absent = no error, then every step must be labelled).
* ``correction``: ``{"question": str, "answer": str}`` + meta ids. Result: ``correction`` text (required),
  the edit box is prefilled with the answer (TextArea ``value="$answer"``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from label_studio_sdk.label_interface import LabelInterface
from lxml import etree

KINDS: tuple[str, ...] = ("pairwise", "ranking", "binary", "step", "correction")

TASK_DATA_KEYS: dict[str, tuple[str, ...]] = {
    "pairwise": ("prompt", "a", "b"),
    "ranking": ("prompt", "items"),
    "binary": ("prompt", "response"),
    "step": ("question", "steps"),
    "correction": ("question", "answer"),
}

PAIRWISE_CHOICES = ("A", "B", "tie")
BINARY_CHOICES = ("good", "bad")
STEP_CHOICES = ("positive", "neutral", "negative")
CRITERIA = ("helpfulness", "harmlessness", "honesty")
DEFAULT_QUESTIONS = ("harmlessness",)
"""Pairwise: the optional aspect questions a project asks unless told otherwise (Safe RLHF's second question);
each is a ``preference_<aspect>`` Choices whose answer is a comparison of that aspect. The required ``preference``
is the ``overall`` one."""
QUESTION_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
_PHRASES = {"harmlessness": "more harmless", "helpfulness": "more helpful", "honesty": "more honest"}

_INDEX_FLAG = "{{idx}}"


class ConfigError(ValueError):
    """A labeling config is not valid."""


# ------------------------------------------------------------------------------------------------ configs


@cache
def config_for(kind: str, questions: tuple[str, ...] | None = None) -> str:
    """The labeling config XML for a feedback kind (one of :data:`KINDS`); pairwise asks ``questions`` (optional
    aspect questions, default :data:`DEFAULT_QUESTIONS`) after the required overall one."""
    if kind not in KINDS:
        raise ValueError(f"unknown feedback kind {kind!r}; expected one of {', '.join(KINDS)}")
    xml = resources.files("alignloop.annotation").joinpath("configs", f"{kind}.xml").read_text(encoding="utf-8")
    if questions is None or tuple(questions) == DEFAULT_QUESTIONS:
        return xml
    if kind != "pairwise":
        raise ConfigError(f"aspect questions are asked of pairwise projects, not {kind}")
    if problem := question_problem(questions):
        raise ConfigError(problem)
    return xml.replace(_question_block(DEFAULT_QUESTIONS[0]), "".join(_question_block(q) for q in questions))


def question_problem(questions: Sequence[str]) -> str | None:
    """Why these can't be a pairwise project's aspect questions (None: they can)."""
    for q in questions:
        if not QUESTION_NAME.fullmatch(q) or q == "overall":
            return (f"aspect question {q!r}: a name of lower-case letters, digits and _ (up to 40), other than "
                    "'overall' (the required question)")
    if len(set(questions)) != len(questions):
        return f"aspect questions repeat: {', '.join(questions)}"
    return None


def _question_block(aspect: str) -> str:
    phrase = _PHRASES.get(aspect, f"better for {aspect.replace('_', ' ')}")
    choices = "".join(f'    <Choice value="{c}"/>\n' for c in PAIRWISE_CHOICES)
    return (f'  <Header value="Which response is {phrase}? (optional)" size="5"/>\n'
            f'  <Choices name="preference_{aspect}" toName="prompt" choice="single-radio" showInline="true">\n'
            f"{choices}  </Choices>\n")


@cache
def aspect_questions(config_xml: str) -> dict[str, str]:
    """A pairwise config's optional aspect questions: {control name: the aspect its answers are comparisons of}."""
    tree = etree.fromstring(config_xml.encode())
    return {name: name.removeprefix("preference_") for el in tree.iter("Choices")
            if (name := el.get("name", "")).startswith("preference_")}


def validate_config(xml: str) -> LabelInterface:
    """Validate a labeling config with the SDK's ``LabelInterface``; raise :class:`ConfigError` if invalid."""
    try:
        interface = LabelInterface(xml)
        interface.validate()
    except Exception as exc:  # noqa: BLE001 - the SDK raises assorted exception types
        raise ConfigError(f"invalid labeling config: {exc}") from None
    if not interface._controls:  # no public accessor for "has no control tags"
        raise ConfigError("invalid labeling config: it has no control tags, nothing can be annotated")
    return interface


# ------------------------------------------------------------------------------------------------ task data


def _with_meta(data: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    clash = set(meta) & set(data)
    if clash:
        raise ValueError(f"meta keys clash with task data keys: {sorted(clash)}")
    return {**data, **meta}


def pairwise_task(prompt: str, a: str, b: str, **meta: Any) -> dict[str, Any]:
    return _with_meta({"prompt": prompt, "a": a, "b": b}, meta)


def ranking_task(prompt: str, responses: list[tuple[str, str]] | list[dict[str, str]], **meta: Any) -> dict[str, Any]:
    """``responses``: ``(id, text)`` pairs or ready ``{"id", "title", "body"}`` dicts."""
    items = []
    for n, item in enumerate(responses, start=1):
        if isinstance(item, dict):
            items.append({"id": str(item["id"]), "title": item.get("title", f"Response {n}"), "body": item["body"]})
        else:
            items.append({"id": str(item[0]), "title": f"Response {n}", "body": item[1]})
    if len({i["id"] for i in items}) != len(items):
        raise ValueError("ranking item ids must be unique")
    return _with_meta({"prompt": prompt, "items": items}, meta)


def binary_task(prompt: str, response: str, **meta: Any) -> dict[str, Any]:
    return _with_meta({"prompt": prompt, "response": response}, meta)


def step_task(question: str, steps: list[str], **meta: Any) -> dict[str, Any]:
    return _with_meta(
        {"question": question, "steps": [{"title": f"Step {n}", "text": s} for n, s in enumerate(steps, start=1)]},
        meta,
    )


def correction_task(question: str, answer: str, **meta: Any) -> dict[str, Any]:
    return _with_meta({"question": question, "answer": answer}, meta)


def check_task_data(kind: str, data: dict[str, Any]) -> list[str]:
    """Problems with task data for ``kind`` (empty list = fine)."""
    problems = [f"task data is missing {key!r}" for key in TASK_DATA_KEYS[kind] if key not in data]
    if kind == "ranking" and isinstance(data.get("items"), list):
        ids = [i.get("id") if isinstance(i, dict) else None for i in data["items"]]
        if any(not isinstance(i, str) for i in ids) or len(set(ids)) != len(ids):
            problems.append("ranking items need unique string 'id's")
    if kind == "step" and "steps" in data and (not isinstance(data["steps"], list) or not data["steps"]):
        problems.append("'steps' must be a non-empty list")
    return problems


# ------------------------------------------------------------------------------------------------ results


@cache
def _parsed(config_xml: str) -> tuple[LabelInterface, dict[str, dict[str, str]], dict[str, re.Pattern[str]]]:
    """(interface, attributes of each control by name, {template name: regex} for Repeater names)."""
    interface = LabelInterface(config_xml)
    tree = etree.fromstring(config_xml.encode())
    attrs = {el.get("name"): dict(el.attrib) for el in tree.iter() if isinstance(el.tag, str) and el.get("toName")}
    templates = {}
    for name in list(interface._controls) + list(interface._objects):
        if _INDEX_FLAG in name:
            templates[name] = re.compile("^" + re.escape(name).replace(re.escape(_INDEX_FLAG), r"(\d+)") + "$")
    return interface, attrs, templates


def _template_of(name: str, templates: dict[str, re.Pattern[str]]) -> tuple[str, int | None]:
    for template, pattern in templates.items():
        match = pattern.match(name)
        if match:
            return template, int(match.group(1))
    return name, None


def _choices(region: dict[str, Any]) -> list[Any]:
    value = region.get("value")
    return list(value.get("choices") or []) if isinstance(value, dict) else []


def validate_result(
    kind: str, config_xml: str, result_list: Any, task_data: dict[str, Any] | None = None
) -> list[str]:
    """Problems with one annotation's ``result`` list for a feedback ``kind`` (empty list = valid).

    Checks with the SDK's ``LabelInterface`` (control/object names, region types, choice values that are
    not in the config, value shapes), then what Label Studio itself does not enforce: required controls,
    single choices, rating ranges, and per-kind rules. ``task_data`` (the task's data) enables the
    checks that need it: step indices that do not exist, ranking permutations.
    """
    if kind not in KINDS:
        return [f"unknown feedback kind {kind!r}"]
    if not isinstance(result_list, list):
        return [f"result must be a list, got {type(result_list).__name__}"]
    try:
        interface, attrs, templates = _parsed(config_xml)
    except Exception as exc:  # noqa: BLE001 - lxml / SDK parse errors of any type
        return [f"invalid labeling config: {exc}"]

    problems: list[str] = []
    n_steps = len(task_data["steps"]) if task_data and isinstance(task_data.get("steps"), list) else None

    # 1. SDK validation; Repeater names (step_label_3) are checked against their template (step_label_{{idx}})
    by_name: dict[str, list[dict[str, Any]]] = {}
    for i, region in enumerate(result_list):
        if not isinstance(region, dict):
            problems.append(f"Region {i}: must be a dict, got {type(region).__name__}")
            continue
        if region.get("type") == "relation":
            continue
        generic = copy.deepcopy(region)
        for key in ("from_name", "to_name"):
            if isinstance(region.get(key), str):
                template, index = _template_of(region[key], templates)
                generic[key] = template
                if index is not None and n_steps is not None and index >= n_steps:
                    problems.append(
                        f"Region {i}: {key} {region[key]!r} refers to step index {index}, "
                        f"but the task has {n_steps} steps"
                    )
        problems.extend(
            interface.validate_region(
                generic, return_errors=True, region_index=i, context={"result": result_list, "region": generic}
            )
        )
        if isinstance(region.get("from_name"), str):
            by_name.setdefault(region["from_name"], []).append(region)

    # 2. generic rules Label Studio does not enforce server-side
    for name, regions in by_name.items():
        template, _ = _template_of(name, templates)
        control = attrs.get(template, {})
        if len(regions) > 1 and control.get("perRegion") != "true":
            problems.append(f"control {name!r} appears {len(regions)} times in one annotation")
        tag = regions[0].get("type", "").lower()
        if tag == "choices" and control.get("choice", "single") != "multiple":
            for region in regions:
                if len(_choices(region)) != 1:
                    problems.append(f"control {name!r} needs exactly one choice, got {_choices(region)}")
        if tag == "rating":
            for region in regions:
                rating = region.get("value", {}).get("rating") if isinstance(region.get("value"), dict) else None
                top = int(control.get("maxRating", 5))
                if not isinstance(rating, int) or isinstance(rating, bool) or not 1 <= rating <= top:
                    problems.append(f"control {name!r}: rating must be an integer 1..{top}, got {rating!r}")
    for name, control in attrs.items():
        if control.get("required") == "true" and _INDEX_FLAG not in name and name not in by_name:
            problems.append(f"required control {name!r} is missing")

    # 3. per-kind rules
    if kind == "ranking":
        problems.extend(_ranking_problems(by_name, task_data))
    elif kind == "step":
        problems.extend(_step_problems(by_name, templates, n_steps))
    elif kind == "correction":
        for region in by_name.get("correction", []):
            texts = region.get("value", {}).get("text") if isinstance(region.get("value"), dict) else None
            if not isinstance(texts, list) or not any(isinstance(t, str) and t.strip() for t in texts):
                problems.append("correction text is empty")
    return problems


def _ranking_problems(by_name: dict[str, list[dict[str, Any]]], task_data: dict[str, Any] | None) -> list[str]:
    problems = []
    expected = None
    if task_data and isinstance(task_data.get("items"), list):
        expected = {str(i.get("id")) for i in task_data["items"] if isinstance(i, dict)}
    for region in by_name.get("ranker", []):
        buckets = region.get("value", {}).get("ranker") if isinstance(region.get("value"), dict) else None
        if not isinstance(buckets, dict):
            continue  # already reported by the SDK check
        ranked = [x for ids in buckets.values() if isinstance(ids, list) for x in ids]
        if len(set(ranked)) != len(ranked):
            problems.append(f"ranking lists an item more than once: {ranked}")
        if expected is not None and set(ranked) != expected:
            missing, unknown = sorted(expected - set(ranked)), sorted(set(ranked) - expected)
            problems.append(f"ranking must order every item exactly once (missing {missing}, unknown {unknown})")
    return problems


def _step_problems(
    by_name: dict[str, list[dict[str, Any]]], templates: dict[str, re.Pattern[str]], n_steps: int | None
) -> list[str]:
    problems = []
    labels: dict[int, str] = {}
    for name, regions in by_name.items():
        template, index = _template_of(name, templates)
        if index is not None and template.startswith("step_label_"):
            chosen = _choices(regions[0])
            if chosen:
                labels[index] = chosen[0]
    first_error = None
    for region in by_name.get("first_error", []):
        number = region.get("value", {}).get("number") if isinstance(region.get("value"), dict) else None
        if isinstance(number, float) and number.is_integer():
            number = int(number)
        if (
            not isinstance(number, int)
            or isinstance(number, bool)
            or number < 1
            or (n_steps is not None and number > n_steps)
        ):
            upper = n_steps if n_steps is not None else "number of steps"
            problems.append(f"first_error must be a step number 1..{upper}, got {number!r}")
        else:
            first_error = number
    if first_error is not None:
        err = first_error - 1
        if labels.get(err) != "negative":
            problems.append(
                f"first_error is step {first_error} but that step is labelled {labels.get(err)!r}, not 'negative'"
            )
        after = sorted(i + 1 for i in labels if i > err)
        if after:
            problems.append(f"steps after the first error must not be labelled (labelled: {after})")
        before_neg = sorted(i + 1 for i, v in labels.items() if i < err and v == "negative")
        if before_neg:
            problems.append(f"steps {before_neg} are negative but come before first_error {first_error}")
        unlabelled = sorted(i + 1 for i in range(err) if i not in labels)
        if unlabelled:
            problems.append(f"steps {unlabelled} before the first error are not labelled")
    else:
        negatives = sorted(i + 1 for i, v in labels.items() if v == "negative")
        if negatives:
            problems.append(f"steps {negatives} are negative but first_error is not set")
        if n_steps is not None:
            unlabelled = sorted(i + 1 for i in range(n_steps) if i not in labels)
            if unlabelled:
                problems.append(f"steps {unlabelled} are not labelled (and no first_error is set)")
    return problems
