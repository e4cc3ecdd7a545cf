"""Rule judges (verifiers): final-answer match, format and length constraints, composites; ratings with source 'rule'."""

from alignloop.pipelines.verifiers.answers import equivalent, extract_answer, extract_reference
from alignloop.pipelines.verifiers.checks import (
    CheckResult,
    FinalAnswer,
    ForbiddenWords,
    JsonValid,
    MaxWords,
    MinOtherWords,
    MinWords,
    NoRepetition,
    OnTopic,
    RequiredWords,
)
from alignloop.pipelines.verifiers.composite import CompositeVerifier, get_verifier, rank_samples, rate, short_on_topic

__all__ = [
    "CheckResult", "CompositeVerifier", "FinalAnswer", "ForbiddenWords", "JsonValid", "MaxWords", "MinOtherWords",
    "MinWords", "NoRepetition", "OnTopic", "RequiredWords", "equivalent", "extract_answer", "extract_reference", "get_verifier",
    "rank_samples", "rate", "short_on_topic",
]
