"""Known formats (HH-RLHF, PRM800K, Aligner Q-A-C, TRL's preference and unpaired preference, UltraFeedback,
rankings, Nectar, SHP, PKU-SafeRLHF, BeaverTails, HelpSteer) and the generic field mapping, as record parsers."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from alignloop.pipelines.intake.parsed import ParsedItem, ParsedRating, ParsedResponse, ParsedStepLabel, Rejected
from alignloop.pipelines.intake.readers import RawRecord
from alignloop.warehouse.errors import InputError

_TURN = re.compile(r"\n\n(Human|Assistant): ")
_ROLES = {"Human": "user", "Assistant": "assistant"}
_VALID_ROLES = {"system", "user", "assistant"}


@dataclass(frozen=True)
class FieldMap:
    """How generic records map onto chat prompts."""

    text_field: str | None = None
    """Field holding the prompt text; default: the first of prompt, text, instruction, question, input."""
    messages_field: str | None = None
    """Field holding a chat list; default ``messages`` when present."""
    system: str | None = None
    """System message prepended to every prompt."""
    reference_field: str | None = None
    """Field holding a reference answer; default: reference, answer, solution when present."""


def detect(rec: dict[str, Any]) -> str:
    """Name the known format a record is in, or ``generic``."""
    if {"chosen", "rejected"} <= rec.keys():
        hh = isinstance(rec["chosen"], str) and "prompt" not in rec and "Human:" in rec["chosen"]
        return "hh-rlhf" if hh else "preference"
    if isinstance(rec.get("question"), dict) and isinstance(rec.get("label"), dict):
        return "prm800k"
    if {"question", "answer", "correction"} <= rec.keys():
        return "qac"
    if {"prompt", "completion", "label"} <= rec.keys():
        return "unpaired"
    if isinstance(rec.get("answers"), list) and "prompt" in rec and \
            all(isinstance(a, dict) and {"answer", "rank"} <= a.keys() for a in rec["answers"]):
        return "nectar"
    if {"prompt", "completions", "ranks"} <= rec.keys():
        return "ranking"
    if {"history", "human_ref_A", "human_ref_B", "labels"} <= rec.keys():
        return "shp"
    if {"response_0", "response_1"} <= rec.keys() and ({"better_response_id", "safer_response_id"} & rec.keys()):
        return "pku-saferlhf"
    if {"prompt", "response", "helpfulness", "correctness"} <= rec.keys():
        return "helpsteer"
    if {"prompt", "response", "is_safe"} <= rec.keys():
        return "beavertails"
    if isinstance(rec.get("instruction"), str) and isinstance(rec.get("completions"), list) and \
            all(isinstance(c, dict) and "response" in c for c in rec["completions"]):
        return "ultrafeedback"
    return "generic"


def _need(rec: dict[str, Any], key: str, file: str, line: int, kind: type = str) -> Any:
    if key not in rec or rec[key] is None:
        raise InputError("missing field", file=file, line=line, field=key)
    if not isinstance(rec[key], kind):
        raise InputError(f"expected {kind.__name__}, got {type(rec[key]).__name__}", file=file, line=line, field=key)
    return rec[key]


def _two_answers(texts: dict[str, str], empty: str, same: str) -> None:
    """Reject a pair of answers with an empty one (``empty`` names it: ``{key}`` is its field) or two equal texts."""
    for key, text in texts.items():
        if not text.strip():
            raise Rejected(empty.format(key=key))
    first, second = texts.values()
    if first == second:
        raise Rejected(same)


def hh_turns(transcript: str) -> list[tuple[str, str, int]]:
    """Split an HH-RLHF transcript into (role, text, start offset of the text) turns."""
    matches = list(_TURN.finditer(transcript))
    if not matches or matches[0].start() != 0:
        return []
    turns = []
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(transcript)
        turns.append((_ROLES[m.group(1)], transcript[m.end():end], m.end()))
    return turns


def parse_hh(raw: RawRecord, file: str) -> ParsedItem:
    """HH-RLHF: the shared conversation is the prompt; the two diverging assistant replies are the responses.

    Chosen and rejected are compared turn by turn. They must agree up to an assistant turn where they
    diverge; each response is everything from there on. A response that itself contains ``Human:`` turns
    (the model wrote a fake next turn) is kept whole and flagged ``embedded_turns`` in its meta.
    """
    chosen = _need(raw.data, "chosen", file, raw.line)
    rejected = _need(raw.data, "rejected", file, raw.line)
    tc, tr = hh_turns(chosen), hh_turns(rejected)
    if not tc or not tr:
        raise InputError("transcript does not start with a Human: turn", file=file, line=raw.line,
                         field="chosen" if not tc else "rejected")
    d = 0
    while d < min(len(tc), len(tr)) and tc[d][:2] == tr[d][:2]:
        d += 1
    if d == len(tc) and d == len(tr):
        raise Rejected("chosen equals rejected")
    if d >= len(tc) or d >= len(tr):
        raise Rejected("one transcript is a prefix of the other", f"diverge after turn {d}")
    if tc[d][0] != "assistant" or tr[d][0] != "assistant":
        raise Rejected("transcripts diverge before the last assistant turn", f"at turn {d + 1} ({tc[d][0]})")
    if d == 0:
        raise Rejected("no shared conversation before the responses")
    messages = [{"role": role, "content": text.strip()} for role, text, _ in tc[:d]]
    if messages[-1]["role"] != "user":
        raise Rejected("conversation does not end with a user turn")
    texts = {"chosen": chosen[tc[d][2]:].strip(), "rejected": rejected[tr[d][2]:].strip()}
    for key, text in texts.items():
        if not text:
            raise Rejected(f"empty {key} response")
    responses = tuple(
        ParsedResponse(key, text, meta={"embedded_turns": True} if turns[d + 1:] else None)
        for (key, text), turns in zip(texts.items(), (tc, tr))
    )
    return ParsedItem(raw.line, messages, responses=responses, comparisons=(("chosen", "rejected", "a"),))


def parse_prm800k(raw: RawRecord, file: str) -> ParsedItem:
    """PRM800K: the problem (reference = ground-truth answer); the pre-generated solution as a response with
    ``steps``; each labelled step's rating (-1/0/+1) as a step label; alternative completions kept as
    responses that continue the shared prefix with their own rated last step."""
    q = _need(raw.data, "question", file, raw.line, dict)
    label = _need(raw.data, "label", file, raw.line, dict)
    problem = _need(q, "problem", file, raw.line)
    steps_in = label.get("steps")
    if not isinstance(steps_in, list):
        raise InputError("expected a list", file=file, line=raw.line, field="label.steps")
    pre = q.get("pre_generated_steps")

    def chosen_text(step: dict[str, Any], i: int) -> dict[str, Any]:
        comps = step.get("completions") or []
        if step.get("human_completion"):
            hc = step["human_completion"]
            return {"text": hc["text"] if isinstance(hc, dict) else str(hc), "rating": None, "flagged": None}
        if pre and i < len(pre):
            for c in comps:
                if c.get("text") == pre[i]:
                    return c
        idx = step.get("chosen_completion")
        if isinstance(idx, int) and 0 <= idx < len(comps):
            return comps[idx]
        if comps:
            return comps[0]
        raise InputError(f"step {i} has no completions", file=file, line=raw.line, field="label.steps")

    path = [chosen_text(s, i) for i, s in enumerate(steps_in)]
    steps = list(pre) if pre else [c["text"] for c in path]
    finish = label.get("finish_reason")
    main = ParsedResponse("solution", "\n".join(steps), steps=steps, finish_reason=finish,
                          meta={"pre_generated_answer": q.get("pre_generated_answer"),
                                "verifier_score": q.get("pre_generated_verifier_score")})
    labels = [ParsedStepLabel("solution", i, int(c["rating"]), bool(c.get("flagged")))
              for i, c in enumerate(path) if c.get("rating") is not None]
    alts: list[ParsedResponse] = []
    for i, s in enumerate(steps_in):
        for j, c in enumerate(s.get("completions") or []):
            if c is path[i] or c.get("rating") is None:
                continue
            key = f"alt-{i}-{j}"
            alt_steps = steps[:i] + [c["text"]]
            alts.append(ParsedResponse(key, "\n".join(alt_steps), steps=alt_steps, parent="solution",
                                       meta={"alternative_for_step": i}))
            labels.append(ParsedStepLabel(key, i, int(c["rating"]), bool(c.get("flagged"))))
    for lab in labels:
        if lab.label not in (-1, 0, 1):
            raise InputError(f"step rating {lab.label} not in -1, 0, 1", file=file, line=raw.line, field="rating")
    meta = {"ground_truth_solution": q.get("ground_truth_solution"), "generation": raw.data.get("generation"),
            "quality_control": raw.data.get("is_quality_control_question")}
    return ParsedItem(raw.line, [{"role": "user", "content": problem}], reference=q.get("ground_truth_answer"),
                      meta=meta, responses=(main, *alts), step_labels=tuple(labels), step_finish_reason=finish,
                      judge=f"labeler:{raw.data['labeler']}" if raw.data.get("labeler") else None)


def parse_qac(raw: RawRecord, file: str) -> ParsedItem:
    """Aligner query-answer-correction: the correction is a human edit of the answer."""
    question = _need(raw.data, "question", file, raw.line)
    answer = _need(raw.data, "answer", file, raw.line)
    correction = _need(raw.data, "correction", file, raw.line)
    responses = (ParsedResponse("answer", answer),
                 ParsedResponse("correction", correction, origin="human_edit", parent="answer"))
    return ParsedItem(raw.line, [{"role": "user", "content": question}], responses=responses,
                      corrections=(("answer", "correction"),))


def _messages_from(value: Any, file: str, line: int, field: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise InputError("expected a chat list (JSON)", file=file, line=line, field=field) from None
    if not isinstance(value, list) or not value:
        raise InputError("expected a non-empty list of {role, content}", file=file, line=line, field=field)
    out = []
    for m in value:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in _VALID_ROLES:
            raise InputError("each message needs role (system|user|assistant) and string content",
                             file=file, line=line, field=field)
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _json_chat(text: str) -> list[Any] | None:
    """A chat list written as JSON (as a snapshot's ``prompt`` column and its jsonl export), parsed; else None."""
    if not text.startswith("[{"):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in value) else None


def _chat(value: Any, file: str, line: int, field: str) -> list[dict[str, str]]:
    """A prompt or completion as messages: a string is one message (the caller names its role), a list (or a
    JSON chat string) is a chat."""
    if isinstance(value, str):
        chat = _json_chat(value)
        if chat is None:
            return [{"role": "", "content": value}]
        value = chat
    if value is None:
        raise InputError("missing field", file=file, line=line, field=field)
    return _messages_from(value, file, line, field)


def _completion(value: Any, prompt: list[dict[str, str]], file: str, line: int, field: str) -> str:
    """TRL's completion: a string, ``[assistant message]``, or the prompt's messages followed by one assistant
    message (as UltraFeedback-binarized stores its chosen and rejected)."""
    msgs = _chat(value, file, line, field)
    if msgs[0]["role"] == "":
        return msgs[0]["content"]
    if len(msgs) > len(prompt) and msgs[:len(prompt)] == prompt:
        msgs = msgs[len(prompt):]
    if len(msgs) != 1 or msgs[0]["role"] != "assistant":
        raise InputError(f"expected one assistant message after the prompt, got {len(msgs)} message(s) "
                         f"({', '.join(m['role'] for m in msgs)})", file=file, line=line, field=field)
    return msgs[0]["content"]


def _explicit_prompt(rec: dict[str, Any], file: str, line: int) -> list[dict[str, str]]:
    msgs = _chat(rec.get("prompt"), file, line, "prompt")
    if msgs[0]["role"] == "":
        msgs = [{"role": "user", "content": msgs[0]["content"]}]
    if msgs[-1]["role"] == "assistant":
        raise InputError("the prompt ends with an assistant message", file=file, line=line, field="prompt")
    return msgs


def _implicit_prompt(rec: dict[str, Any], file: str, line: int) -> list[dict[str, str]]:
    """No ``prompt`` field: chosen and rejected are whole chats sharing every message but their last (TRL's
    implicit prompt)."""
    chosen, rejected = (_chat(rec[k], file, line, k) for k in ("chosen", "rejected"))
    if chosen[0]["role"] == "" or rejected[0]["role"] == "":
        raise InputError("missing field: text chosen and rejected need the prompt they answer", file=file,
                         line=line, field="prompt")
    if len(chosen) < 2 or chosen[:-1] != rejected[:-1]:
        raise InputError("without a prompt field, chosen and rejected must be chats that differ in their last "
                         "message only", file=file, line=line, field="rejected")
    return chosen[:-1]


def _scores(rec: dict[str, Any], key: str) -> dict[str, Any] | None:
    """A numeric ``score_chosen`` / ``score_rejected`` (UltraFeedback) kept in the response's meta."""
    value = rec.get(f"score_{key}")
    return {"score": float(value)} if isinstance(value, int | float) and not isinstance(value, bool) else None


def _split(rec: dict[str, Any]) -> str | None:
    """A record's own ``split`` (train or test), else None (the prompt id decides)."""
    return rec.get("split") if rec.get("split") in ("train", "test") else None


def parse_preference(raw: RawRecord, file: str) -> ParsedItem:
    """TRL's preference format, standard (strings) or conversational (chats), explicit or implicit prompt: the
    prompt, chosen and rejected as responses and one comparison, chosen over rejected (the dataset's label; with a
    ``prob`` field, that soft label, 0.5 a tie)."""
    rec = raw.data
    for key in ("chosen", "rejected"):
        if rec.get(key) is None:
            raise InputError("missing field", file=file, line=raw.line, field=key)
    prompt = _explicit_prompt(rec, file, raw.line) if rec.get("prompt") is not None else \
        _implicit_prompt(rec, file, raw.line)
    texts = {k: _completion(rec[k], prompt, file, raw.line, k) for k in ("chosen", "rejected")}
    _two_answers(texts, "empty {key} response", "chosen and rejected are the same text")
    prob = rec.get("prob")  # a soft label, as a pairwise snapshot and its exports carry
    if prob is not None and (isinstance(prob, bool) or not isinstance(prob, int | float) or not 0.5 <= prob <= 1):
        raise InputError(f"expected P(chosen better) in [0.5, 1], got {prob!r}", file=file, line=raw.line,
                         field="prob")
    responses = tuple(ParsedResponse(k, t, meta=_scores(rec, k)) for k, t in texts.items())
    return ParsedItem(raw.line, prompt, responses=responses, split=_split(rec),
                      comparisons=(("chosen", "rejected", "tie" if prob == 0.5 else "a"),),
                      prob_a=None if prob is None else float(prob))


def parse_unpaired(raw: RawRecord, file: str) -> ParsedItem:
    """TRL's unpaired preference format (KTO's): prompt, completion and a boolean label, stored as a thumbs rating
    (1 up, 0 down on a 0..1 scale) of the completion."""
    rec = raw.data
    prompt = _explicit_prompt(rec, file, raw.line)
    text = _completion(rec.get("completion"), prompt, file, raw.line, "completion")
    label = rec.get("label")
    if isinstance(label, str) and label.lower() in ("true", "false", "1", "0"):  # CSV
        label = label.lower() in ("true", "1")
    if not isinstance(label, bool | int) or label not in (0, 1):
        raise InputError(f"expected true or false, got {label!r}", file=file, line=raw.line, field="label")
    if not text.strip():
        raise Rejected("empty completion")
    return ParsedItem(raw.line, prompt, responses=(ParsedResponse("completion", text),),
                      ratings=(ParsedRating("completion", float(label), 0.0, 1.0),), split=_split(rec))


UF_ASPECTS = ("instruction_following", "honesty", "truthfulness", "helpfulness")
"""UltraFeedback's fine-grained aspects, each rated 1-5 by GPT-4 (``N/A`` where it gave none)."""


def _first_answer(text: str, seen: set[str]) -> bool:
    """Whether an answer of a list is non-empty and not one seen before in it (then it is remembered): an empty or
    repeated answer carries nothing of its own."""
    if not text.strip() or text in seen:
        return False
    seen.add(text)
    return True


def _scale_rating(value: Any, file: str, line: int, field: str, lo: float, hi: float) -> float | None:
    """A rating in [lo, hi] (a number or its string), None for N/A."""
    if value is None or (isinstance(value, str) and value.strip().upper() in ("N/A", "NA", "")):
        return None
    try:
        score = float(value)
    except (TypeError, ValueError):
        score = math.nan
    if not lo <= score <= hi:  # NaN fails too
        raise InputError(f"expected a rating in [{lo:g}, {hi:g}] or N/A, got {value!r}", file=file, line=line,
                         field=field)
    return score


def parse_ultrafeedback(raw: RawRecord, file: str) -> ParsedItem:
    """UltraFeedback (openbmb/UltraFeedback): the instruction; each completion a response (its model and principle in
    meta) rated on ``overall`` (``overall_score``, 1-10) and on each fine-grained aspect (``annotations``, 1-5, with
    the rationale), so the ratings builders give its binarisation (best vs worst), RSO pairs or listwise rows."""
    rec = raw.data
    instruction = _need(rec, "instruction", file, raw.line)
    completions = _need(rec, "completions", file, raw.line, list)
    responses, ratings, seen = [], [], set()
    for i, c in enumerate(completions):
        where = f"completions[{i}]"
        if not isinstance(c, dict) or not isinstance(c.get("response"), str):
            raise InputError("expected an object with a response string", file=file, line=raw.line, field=where)
        text = c["response"]
        if not _first_answer(text, seen):
            continue
        key = f"c{i}"
        responses.append(ParsedResponse(key, text, meta={k: c[k] for k in ("model", "principle") if c.get(k)}))
        overall = _scale_rating(c.get("overall_score"), file, raw.line, f"{where}.overall_score", 1, 10)
        if overall is not None:
            ratings.append(ParsedRating(key, overall, 1.0, 10.0, "overall", c.get("critique") or None))
        notes = c.get("annotations") or {}
        for aspect in UF_ASPECTS:
            a = notes.get(aspect)
            if not isinstance(a, dict):
                continue
            score = _scale_rating(a.get("Rating"), file, raw.line, f"{where}.annotations.{aspect}.Rating", 1, 5)
            if score is not None:
                why = a.get("Rationale For Rating") or a.get("Rationale")
                ratings.append(ParsedRating(key, score, 1.0, 5.0, aspect, why if isinstance(why, str) else None))
    if not responses:
        raise Rejected("no non-empty completions")
    return ParsedItem(raw.line, [{"role": "user", "content": instruction}], responses=tuple(responses),
                      ratings=tuple(ratings), meta={"source": rec["source"]} if rec.get("source") else None,
                      split=_split(rec))


def generic_parser(fm: FieldMap) -> Callable[[RawRecord, str], ParsedItem]:
    def parse(raw: RawRecord, file: str) -> ParsedItem:
        rec = raw.data
        if fm.messages_field or (not fm.text_field and "messages" in rec):
            key = fm.messages_field or "messages"
            if key not in rec:
                raise InputError("missing field", file=file, line=raw.line, field=key)
            messages = _messages_from(rec[key], file, raw.line, key)
        else:
            key = fm.text_field or next((k for k in ("prompt", "text", "instruction", "question", "input")
                                         if k in rec), None)
            if key is None or key not in rec:
                raise InputError("missing field (use --text-field or --messages-field)", file=file, line=raw.line,
                                 field=key or "prompt")
            text = rec[key]
            if not isinstance(text, str):
                raise InputError(f"expected a string, got {type(text).__name__}", file=file, line=raw.line, field=key)
            messages = [{"role": "user", "content": text}]
        if fm.system and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": fm.system}, *messages]
        ref_key = fm.reference_field or next((k for k in ("reference", "answer", "solution") if k in rec), None)
        reference = rec.get(ref_key) if ref_key else None
        if reference is not None and not isinstance(reference, str):
            reference = json.dumps(reference) if not isinstance(reference, int | float) else str(reference)
        tags = rec.get("tags") or []
        if isinstance(tags, str):
            tags = [t for t in tags.split(",") if t]
        split = rec.get("split") if rec.get("split") in ("train", "test") else None
        meta = rec.get("meta") if isinstance(rec.get("meta"), dict) else None
        return ParsedItem(raw.line, messages, reference=reference, tags=[str(t) for t in tags], meta=meta, split=split)

    return parse


def _ranked(raw: RawRecord, file: str, prompt: list[dict[str, str]], texts: list[Any], ranks: Any,
            metas: list[dict[str, Any] | None]) -> ParsedItem:
    """Responses ranked by ``ranks`` (1 = best; ties keep the file's order); a repeated or empty answer is left
    out of the ranking."""
    if not isinstance(ranks, list) or len(ranks) != len(texts) or not all(
            isinstance(r, int | float) and not isinstance(r, bool) for r in ranks):
        raise InputError(f"expected a number per completion ({len(texts)}), got {ranks!r}", file=file,
                         line=raw.line, field="ranks")
    responses, seen = [], set()
    for i, (text, meta) in enumerate(zip(texts, metas)):
        if _first_answer(text, seen):
            responses.append((ranks[i], i, ParsedResponse(f"c{i}", text, meta=meta)))
    if len(responses) < 2:
        raise Rejected("fewer than two distinct non-empty completions to rank")
    responses.sort(key=lambda r: (r[0], r[1]))
    return ParsedItem(raw.line, prompt, responses=tuple(r for _, _, r in responses),
                      ranking=tuple(r.key for _, _, r in responses), split=_split(raw.data))


def parse_shp(raw: RawRecord, file: str) -> ParsedItem:
    """Stanford Human Preferences (SHP): a Reddit post (``history``) and two comments, ``labels`` 1 when people
    preferred A (by votes); the score ratio and domain go to meta."""
    rec = raw.data
    history = _need(rec, "history", file, raw.line)
    texts = {k: _need(rec, f"human_ref_{k}", file, raw.line) for k in ("A", "B")}
    label = rec.get("labels")
    if isinstance(label, bool) or label not in (0, 1):
        raise InputError(f"expected 1 (A preferred) or 0 (B preferred), got {label!r}", file=file, line=raw.line,
                         field="labels")
    _two_answers(texts, "empty comment", "the two comments are the same text")
    scores = {k: rec.get(f"score_{k}") for k in ("A", "B")}
    responses = tuple(ParsedResponse(k, t, meta={"score": scores[k]} if isinstance(scores[k], int | float) else None)
                      for k, t in texts.items())
    meta = {k: rec[k] for k in ("post_id", "domain", "score_ratio") if rec.get(k) is not None} or None
    return ParsedItem(raw.line, [{"role": "user", "content": history}], responses=responses, meta=meta,
                      comparisons=(("A", "B", "a" if label == 1 else "b"),), split=_split(rec))


PKU_ASPECTS = {"better_response_id": "helpfulness", "safer_response_id": "harmlessness"}
"""PKU-SafeRLHF's two verdicts on each pair and the comparison aspect each becomes (Safe RLHF's reward model learns
the first, its cost model the second)."""
SAFETY_ASPECT = "safety"
"""PKU-SafeRLHF's per-response ``is_response_N_safe``: a thumbs rating (1 safe, 0 not) of this aspect."""


def parse_pku_saferlhf(raw: RawRecord, file: str) -> ParsedItem:
    """PKU-SafeRLHF (Safe RLHF, Dai et al. 2024; BeaverTails): a prompt, two responses, which is more helpful
    (``better_response_id``) and which is safer (``safer_response_id``) as comparisons with aspects helpfulness and
    harmlessness, and each response's safety (``is_response_N_safe``) as a thumbs rating with aspect safety. Severity
    levels, harm categories and the generating models go to the responses' meta."""
    rec = raw.data
    prompt = _need(rec, "prompt", file, raw.line)
    texts = {k: _need(rec, f"response_{k}", file, raw.line) for k in ("0", "1")}
    verdicts = []
    for key, aspect in PKU_ASPECTS.items():
        if rec.get(key) is None:
            continue
        if isinstance(rec[key], bool) or rec[key] not in (0, 1):
            raise InputError(f"expected 0 or 1 (the response preferred), got {rec[key]!r}", file=file,
                             line=raw.line, field=key)
        verdicts.append(("0", "1", "a" if rec[key] == 0 else "b", aspect))
    if not verdicts:
        raise InputError("missing field", file=file, line=raw.line, field="better_response_id")
    ratings = []
    for k in texts:
        safe = rec.get(f"is_response_{k}_safe")
        if safe is not None and not isinstance(safe, bool):
            raise InputError(f"expected true or false, got {safe!r}", file=file, line=raw.line,
                             field=f"is_response_{k}_safe")
        if safe is not None:
            ratings.append(ParsedRating(k, float(safe), 0.0, 1.0, SAFETY_ASPECT))
    _two_answers(texts, "empty response", "the two responses are the same text")

    def meta(k: str) -> dict[str, Any] | None:
        out = {"model": rec.get(f"response_{k}_source"), "severity_level": rec.get(f"response_{k}_severity_level"),
               "harm_categories": _harms(rec.get(f"response_{k}_harm_category"))}
        return {m: v for m, v in out.items() if v is not None} or None

    responses = tuple(ParsedResponse(k, t, meta=meta(k)) for k, t in texts.items())
    source = {"prompt_source": rec["prompt_source"]} if rec.get("prompt_source") is not None else None
    return ParsedItem(raw.line, [{"role": "user", "content": prompt}], responses=responses, meta=source,
                      comparisons=tuple(verdicts), ratings=tuple(ratings), split=_split(rec))


def _harms(categories: Any) -> list[str] | None:
    """The names of the harm categories a record marks true (PKU-SafeRLHF, BeaverTails), None without any."""
    return sorted(c for c, hit in categories.items() if hit) if isinstance(categories, dict) else None


def parse_beavertails(raw: RawRecord, file: str) -> ParsedItem:
    """BeaverTails (the QA pairs behind PKU-SafeRLHF): a prompt, one response and whether people judged it safe, as a
    thumbs rating with aspect safety (``dataset build binary -o origin=thumbs -o aspect=safety``: a safety
    classifier's or a cost model's sign data); the harm categories go to the response's meta."""
    rec = raw.data
    prompt = _need(rec, "prompt", file, raw.line)
    text = _need(rec, "response", file, raw.line)
    safe = _need(rec, "is_safe", file, raw.line, bool)
    if not text.strip():
        raise Rejected("empty response")
    harms = _harms(rec.get("category"))
    return ParsedItem(raw.line, [{"role": "user", "content": prompt}], split=_split(rec),
                      responses=(ParsedResponse("response", text, meta={"harm_categories": harms} if harms else None),),
                      ratings=(ParsedRating("response", float(safe), 0.0, 1.0, SAFETY_ASPECT),))


HELPSTEER_ASPECTS = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
"""HelpSteer's attributes, each rated 0-4 by people."""
_HELPSTEER_TURN = re.compile(r"\n?<extra_id_1>(User|Assistant)\n?")


def _helpsteer_prompt(text: str) -> list[dict[str, str]]:
    """A HelpSteer prompt as a chat: earlier turns of a multi-turn prompt follow ``<extra_id_1>Assistant`` and
    ``<extra_id_1>User`` markers, the first turn is the user's."""
    parts = _HELPSTEER_TURN.split(text)
    turns = [("user", parts[0]), *((role.lower(), body) for role, body in zip(parts[1::2], parts[2::2]))]
    return [{"role": role, "content": body.strip()} for role, body in turns]


def parse_helpsteer(raw: RawRecord, file: str) -> ParsedItem:
    """HelpSteer / HelpSteer2 (NVIDIA): a prompt, one response and people's 0-4 ratings of its helpfulness,
    correctness, coherence, complexity and verbosity, each a rating of that aspect. The records of one prompt
    (HelpSteer2 rates two responses to each) join one prompt, so ``-o origin=ratings -o aspect=helpfulness`` pairs
    them as HelpSteer2's preference data was built."""
    rec = raw.data
    prompt = _helpsteer_prompt(_need(rec, "prompt", file, raw.line))
    if prompt[-1]["role"] != "user" or not prompt[-1]["content"]:
        raise InputError("expected the prompt to end with a user turn", file=file, line=raw.line, field="prompt")
    text = _need(rec, "response", file, raw.line)
    ratings = []
    for aspect in HELPSTEER_ASPECTS:
        score = _scale_rating(rec.get(aspect), file, raw.line, aspect, 0, 4)
        if score is not None:
            ratings.append(ParsedRating("response", score, 0.0, 4.0, aspect))
    if not text.strip():
        raise Rejected("empty response")
    return ParsedItem(raw.line, prompt, responses=(ParsedResponse("response", text),), ratings=tuple(ratings),
                      split=_split(rec))


def parse_ranking(raw: RawRecord, file: str) -> ParsedItem:
    """A ranking: ``prompt``, ``completions`` (strings or chats) and ``ranks`` (1 = best, one per completion), for
    RRHF, LiPO, PRO and listwise reward models."""
    rec = raw.data
    prompt = _explicit_prompt(rec, file, raw.line)
    completions = _need(rec, "completions", file, raw.line, list)
    texts = [_completion(c, prompt, file, raw.line, f"completions[{i}]") for i, c in enumerate(completions)]
    return _ranked(raw, file, prompt, texts, rec.get("ranks"), [None] * len(texts))


def parse_nectar(raw: RawRecord, file: str) -> ParsedItem:
    """Nectar (berkeley-nest/Nectar): an HH-style transcript prompt (``\n\nHuman: ...\n\nAssistant:``) and 7
    ``answers`` GPT-4 ranked (``rank`` 1 = best), each with its ``model``."""
    rec = raw.data
    transcript = _need(rec, "prompt", file, raw.line)
    turns = hh_turns(re.sub(r"\n\nAssistant:\s*$", "", transcript))  # the open turn the answers fill
    prompt = [{"role": role, "content": text.strip()} for role, text, _ in turns] or \
        [{"role": "user", "content": transcript.strip()}]
    answers = _need(rec, "answers", file, raw.line, list)
    for i, a in enumerate(answers):
        if not isinstance(a, dict) or not isinstance(a.get("answer"), str):
            raise InputError("expected an object with an answer string", file=file, line=raw.line,
                             field=f"answers[{i}]")
    return _ranked(raw, file, prompt, [a["answer"] for a in answers], [a.get("rank") for a in answers],
                   [{"model": a["model"]} if a.get("model") else None for a in answers])


PARSERS: dict[str, Callable[[RawRecord, str], ParsedItem]] = {
    "hh-rlhf": parse_hh, "prm800k": parse_prm800k, "qac": parse_qac, "preference": parse_preference,
    "unpaired": parse_unpaired, "ultrafeedback": parse_ultrafeedback, "ranking": parse_ranking,
    "nectar": parse_nectar, "shp": parse_shp, "pku-saferlhf": parse_pku_saferlhf, "helpsteer": parse_helpsteer,
    "beavertails": parse_beavertails,
}

FEEDBACK_SOURCE = {"ultrafeedback": "ai", "nectar": "ai"}
"""Who labelled a format's files where it is not people (UltraFeedback, Nectar: GPT-4)."""
