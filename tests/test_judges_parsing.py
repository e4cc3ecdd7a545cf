"""Judge replies read by their template's grammar: a table of real-looking replies, and properties (hypothesis):
text around a well-formed verdict never flips it, text without one is never read as a verdict."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alignloop.pipelines.judges.parsing import GRAMMARS, grammar, read, read_steps
from alignloop.pipelines.judges.templates import TEMPLATE_NAMES
from alignloop.warehouse.errors import AlignloopError

PAIRWISE = [
    # the form the template asks for, and its decorations
    ("A", "A"), (" b.", "B"), ("b", "B"), ("[[B]]", "B"), ("**A**", "A"), ("tie", "tie"), ("Tie.", "tie"),
    ("(A)", "A"), ("`B`", "B"),
    # after a label, alone on the line
    ("Verdict: A", "A"), ("**Verdict: B**", "B"), ("**Verdict:** B", "B"), ("Final answer: [[A]]", "A"),
    ("Final Answer: \\boxed{B}", "B"), ("### Verdict\nB", "B"), ("The better answer is B.", "B"),
    ("My answer is a tie", "tie"), ("Winner - A", "A"), ("Answer B is better.", "B"), ("I prefer B.", "B"),
    ("It's a tie.", "tie"), ("Verdict: Response B", "B"), ("Assistant A", "A"), ("**Final verdict:** Answer A.", "A"),
    # reasoning, then the verdict on its own line
    ("Answer A is longer, but B says the same in fewer words.\n\nVerdict: B", "B"),
    ("Both are correct. A adds an example.\nA", "A"),
    ("Verdict: B\n\n**Verdict: B**", "B"),  # the same verdict twice is one verdict
    # the verdict first, then an explanation that names no other
    ("A, because it is shorter", "A"), ("A\n\nExplanation: Answer A is", "A"), ("B - it answers the question", "B"),
    # articles, words and letters that are no verdict
    ("My answer is a bit unclear", None), ("The answer is a bit unclear, both fine", None),
    ("The choice is a hard one; B", None), ("Tie-breaker: A", None), ("answer: tie actually B", None),
    ("Neither", None), ("Both are fine.", None), ("A or B, hard to say", None), ("A is good but B is better", None),
    ("a good answer needs more detail", None), ("Verdict: a", None),
    # contradictions
    ("The answer is A. Actually, B.", None), ("The answer is A.\nActually, B.", None), ("Verdict: A\nVerdict: B", None),
    ("A\n\nB is better though.", None), ("A, or maybe tie", None),
    # refusals and nothing
    ("I'm sorry, I can't judge this.", None), ("As an AI I cannot", None), ("", None), ("   \n ", None),
]
RATINGS = [
    ("7", 7.0), ("7.", 7.0), ("Rating: 7.", 7.0), ("Rating: 8/10", 8.0), ("**Score:** 9", 9.0), ("10", 10.0),
    ("7 out of 10", 7.0), ("Helpfulness rating: 6", 6.0), ("My rating is 8", 8.0), ("I would rate it 7.", 7.0),
    ("The answer is clear and correct.\n\nRating: 9", 9.0), ("8 - clear and correct", 8.0), ("7.5", 7.5),
    ("8\n\nIt covers 3 points.", 8.0),
    ("-3", None), ("Rating: -3", None), ("11", None), ("0", None), ("3 or 4", None), ("Rating: 7\nRating: 8", None),
    ("Rating: 8/5", None), ("1. The answer is correct.", None), ("It covers 3 points.", None), ("seven", None),
    ("Rating: 7\n\nOn reflection 6/10.", None), ("I cannot rate this.", None),
]
DIGITS = [("0", 0.0), ("9", 9.0), ("Rating: 4", 4.0), ("10", None), ("7/10", None), ("-1", None)]
BINARY = [
    ("Yes", True), ("No", False), ("no.", False), ("**Yes**", True), ("Verdict: No", False),
    ("Is the answer acceptable? Yes", True), ("Acceptable: yes", True), ("Yes, the answer is correct.", True),
    ("No, it invents a date.", False), ("Yes, no errors.", True), ("The answer has a flaw.\n\nNo", False),
    ("No problems, the answer is correct.", None), ("Not sure.", None), ("Yes. Actually, no.", None),
    ("Yes\nNo", None), ("Maybe", None), ("I'm sorry, but I can't help with that.", None), ("", None),
]
LABELS = ["A", "B", "C"]
RANKINGS = [
    ("C > A > B", [2, 0, 1]), ("C > A", [2, 0, 1]), ("Ranking: B > C > A", [1, 2, 0]), ("**C > B > A**", [2, 1, 0]),
    ("c > a > b", [2, 0, 1]), ("A is the most complete.\n\nFinal ranking: A > C > B", [0, 2, 1]),
    ("C > A > B\n\nC is shortest.", [2, 0, 1]),
    ("C > D > A", None), ("A", None), ("C > A > C", None), ("C > A > B\nB > A > C", None), ("Neither", None),
    ("C > A > B. Actually B > A > C.", None), ("", None),
]
STEPS = [
    ("Step 1: +1\nStep 2: -1\nStep 3: 0", 3, [1, -1, 0]),
    ("**Step 1:** +1\n**Step 2:** −1", 2, [1, -1]),
    ("Here are the labels:\n- Step 1: 1\n- Step 2: +1 (correct)", 2, [1, 1]),
    ("Step 1: +1\nStep 2: -1", 3, [1, -1, None]),  # a step left out stays unlabelled
    ("Step 1: 1\nStep 1: -1", 2, [None, None]),  # labelled twice: the whole reply is unreadable
    ("Step 1: +1\nStep 1: +1", 2, [None, None]),
    ("Step 1: +1\nStep 2: -1\nStep 9: 0", 3, [None, None, None]),  # a step the solution does not have
    ("Step 1: 10", 1, [None]), ("Step 1: 0.5", 1, [None]), ("Step 1: +1, Step 2: -1", 2, [None, None]),
    ("Step 1 is right, step 2 is wrong", 2, [None, None]), ("I cannot label these steps.", 2, [None, None]),
    ("", 1, [None]),
]


@pytest.mark.parametrize("text, want", PAIRWISE)
def test_pairwise_replies(text, want):
    r = read("pairwise", text)
    assert r.verdict == want, r.reason
    assert (r.reason is None) == (want is not None) and (want is not None or r.reason)


@pytest.mark.parametrize("template, text, want", [("rating", t, w) for t, w in RATINGS] +
                         [("rating_digit", t, w) for t, w in DIGITS])
def test_rating_replies(template, text, want):
    r = read(template, text)
    assert r.verdict == want, r.reason
    assert (r.reason is None) == (want is not None)


@pytest.mark.parametrize("text, want", BINARY)
def test_binary_replies(text, want):
    r = read("binary", text)
    assert r.verdict is want, r.reason
    assert (r.reason is None) == (want is not None)


@pytest.mark.parametrize("text, want", RANKINGS)
def test_listwise_replies(text, want):
    r = read("listwise", text, LABELS)
    assert r.verdict == want, r.reason
    assert (r.reason is None) == (want is not None)


@pytest.mark.parametrize("text, n, want", STEPS)
def test_step_replies(text, n, want):
    r = read_steps(text, n)
    assert r.labels == want, r.reason
    assert (r.reason is None) == (None not in want)


def test_reasons_say_what_was_wrong():
    assert read("rating", "-3").reason == "-3 is outside 1..10 (line 1)"
    assert read("pairwise", "Verdict: A\nVerdict: B").reason == "two verdicts: A (line 1) and B (line 2)"
    assert read("pairwise", "The answer is A.\nActually, B.").reason == "B named after the verdict A"
    assert read("pairwise", "Tie-breaker: A").reason.startswith("no verdict: the template asks for A, B or tie")
    assert read("pairwise", "I'm sorry, I can't judge this.").reason == "a refusal"
    assert read_steps("Step 1: 1\nStep 1: -1", 2).reason == "step 1 labelled twice (line 2)"
    assert read_steps("Step 1: +1", 3).reason == "step 2, 3 not labelled"
    assert read("listwise", "C > A > C", LABELS).reason == "C ranked twice (line 1)"


def test_every_verdict_template_has_one_grammar_and_judges_refuse_another():
    assert set(GRAMMARS) == set(TEMPLATE_NAMES) - {"correction", "aligner"}  # those replies are text
    assert grammar("rating_digit", "rating").scale == (0, 9)
    with pytest.raises(AlignloopError, match="a pairwise judge cannot read replies to template 'rating'"):
        grammar("rating", "pairwise")


# --- properties -------------------------------------------------------------------------------------------------
# Words a judge's reasoning is made of, the article "a", labels and near-verdicts among them; no word is a verdict by
# itself (no capital A or B, no "tie") and every line has two words or more besides markdown, so no line is a lone
# letter.
WORDS = ["a", "an", "the", "answer", "Answer", "is", "better", "both", "fine", "bit", "unclear,", "choice", "hard",
         "one;", "Tie-breaker:", "Verdict:", "verdict", "neither", "actually,", "b-side", "A-grade", "AB", "B2",
         "Rating:", "score", "Yes-man", "nope", "yesterday", "not", "Step", "step:", ":", "-", ">", "ties", "tied",
         "because", "said", "3rd", "seven", "points", "No-one", "Bob", "Alice"]
MARKS = ["", "**", "[[", "]]", "(", ")", "#", "- ", "`"]
line = st.builds(lambda open_, words, close: f"{open_}{' '.join(words)}{close}", st.sampled_from(MARKS),
                 st.lists(st.sampled_from(WORDS), min_size=2, max_size=9), st.sampled_from(MARKS))
prose = st.lists(line, min_size=0, max_size=5).map("\n".join)
VERDICT_LINES = {
    "pairwise": ["{v}", "**{v}**", "[[{v}]]", "Verdict: {v}", "**Verdict: {v}**", "Final answer: [[{v}]]",
                 "The better answer is {v}."],
    "rating": ["{v}", "Rating: {v}", "**Rating:** {v}/10", "Score: {v}."],
    "binary": ["{v}", "Verdict: {v}", "**{v}**"],
    "listwise": ["{v}", "Ranking: {v}", "[[{v}]]"],
}
VALUES = {"pairwise": [("A", "A"), ("B", "B"), ("tie", "tie")], "rating": [(str(s), float(s)) for s in range(1, 11)],
          "binary": [("Yes", True), ("No", False)],
          "listwise": [("A > B > C", [0, 1, 2]), ("C > A > B", [2, 0, 1]), ("B > C > A", [1, 2, 0])]}


@st.composite
def stated(draw, kind):
    shown, want = draw(st.sampled_from(VALUES[kind]))
    return draw(st.sampled_from(VERDICT_LINES[kind])).format(v=shown), want


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(list(VALUES)), data=st.data(), before=prose, after=prose,
       noise=st.text(max_size=80))
def test_text_around_a_verdict_never_flips_it(kind, data, before, after, noise):
    verdict_line, want = data.draw(stated(kind))
    labels = LABELS if kind == "listwise" else ()
    # reasoning before it: the verdict, exactly
    assert read(kind, f"{before}\n{verdict_line}", labels).verdict == want
    # anything around it, random characters included: the verdict, or unreadable; never another
    for text in (f"{before}\n{verdict_line}\n{after}", f"{noise}\n{verdict_line}\n{noise}",
                 f"{after}\n{verdict_line}\n{before}\n{noise}"):
        assert read(kind, text, labels).verdict in (want, None)


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(list(VALUES)), text=prose)
def test_text_without_a_verdict_is_never_read_as_one(kind, text):
    r = read(kind, text, LABELS if kind == "listwise" else ())
    assert r.verdict is None and r.reason


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(list(VALUES)),
       text=st.text(st.characters(blacklist_characters="ABCabc0123456789tTyYnN", blacklist_categories=("Cs",))))
def test_random_characters_are_never_a_verdict(kind, text):
    assert read(kind, text, LABELS if kind == "listwise" else ()).verdict is None


@settings(max_examples=200, deadline=None)
@given(labels=st.lists(st.sampled_from([1, 0, -1]), min_size=1, max_size=6), before=prose, after=prose)
def test_step_lines_among_commentary_are_read_exactly(labels, before, after):
    body = "\n".join(f"Step {i + 1}: {v:+d}" if v else f"Step {i + 1}: 0" for i, v in enumerate(labels))
    commentary = [ln for ln in f"{before}\n{after}".splitlines() if "step" not in ln.lower()]
    got = read_steps("\n".join([*commentary[:2], body, *commentary[2:]]), len(labels))
    assert got.labels == labels and got.reason is None
