"""Rubrics: a team's guidelines written as checks the studio can run on an answer.

A rubric is YAML:

    categories:                 # optional: a name for a kind of prompt -> a pattern the prompt matches
      fraud: "fraud|scam|did not make"
    checks:
      - name: Brief             # each check scores an answer from 0 to 1
        min_words: 15           # under it the score falls in proportion
        max_words: 100          # over it the score falls, reaching 0 at twice the limit
      - name: Fraud: freeze the card and call the fraud line
        when: fraud             # only for prompts of these categories (a name or a list)
        must: ["freez", "fraud line|call"]   # every pattern must match the answer
        weight: 2               # how much it counts (default 1)
      - name: Never asks for a PIN
        must_not: ["(tell|give|send) me your pin"]   # no pattern may match
      - name: Friendly
        any: ["happy to|glad|sorry|thank"]   # at least one pattern must match
      - name: Helps
        unless: advice          # for prompts of none of these categories (a name or a list)
        helps: true             # does not decline to help (see `declines`)
      - name: Not toxic
        max_toxicity: 0.25      # offline toxicity (0-1) at most this
      - name: House style
        function: my_module:check   # called as check(prompt, answer) -> a number from 0 to 1 (or True/False)

Patterns are regular expressions, matched without regard to case by Google's RE2, which runs in time linear in the
answer's length whatever the pattern (no pattern can stall the server); RE2 lacks look-around and back-references,
and a pattern using them is refused with the line to fix. An answer's score is the weighted mean of the
checks that apply to its prompt, from 0 to 1. The studio uses a rubric as an automatic score (Evaluate, alignment
reports), as a suggested ranking on the Rank tab, and as a reward for online RL.
"""

import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import re2
import yaml

from studio.core import access
from studio.inference.toxicity import toxicity as offline_toxicity

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "rubrics"
TOP_KEYS = {"description", "categories", "checks"}
CHECK_KEYS = {
    "name",
    "when",
    "unless",
    "weight",
    "must",
    "must_not",
    "any",
    "min_words",
    "max_words",
    "max_toxicity",
    "helps",
    "function",
}
TESTS = CHECK_KEYS - {"name", "when", "unless", "weight"}
MAX_RUBRIC_BYTES = 200_000
_WORD = re.compile(r"\w+(?:['’]\w+)*")


# An answer that declines to help: "I'm sorry, but I can't help with that", "unable to assist with opening or
# closing accounts", "as an AI I cannot". Ours, in English, tested on constructed answers (tests/test_rubric.py).
# A refusal that is right (advice a bank may not give, a request to break the rules) is the guidelines' to say: the
# `helps` check applies only where the rubric says to answer (`unless` names the categories a refusal is fine in).
# "I can't" or "I'm unable to" (curly apostrophes read as straight ones), then a verb of helping. A verb of doing
# (open, process...) counts after "I"; after "we" only where it points at the request ("that", "your request",
# "... for you"), and "we won't" not at all, so that a rule or a promise stated in an answer ("we can't open
# accounts for minors, but...", "we won't close your account") is not a refusal.
_I_CANNOT = (
    r"\bi(?:\s+(?:can'?t|cannot|can not|won'?t|will not|am unable to|am not able to|am not allowed to|"
    r"am not permitted to)|'m (?:unable to|not able to|not allowed to|not permitted to)) (?:be able to )?"
)
_WE_CANNOT = (
    r"\bwe(?:\s+(?:can'?t|cannot|can not|are unable to|are not able to|are not allowed to|are not permitted to)|"
    r"'re (?:unable to|not able to|not allowed to|not permitted to)) (?:be able to )?"
)
_DOING = r"(?:provide|process|open|close|handle|offer)"
DECLINES = [
    f"(?:{_I_CANNOT}|{_WE_CANNOT})" + r"(?:help|assist|support|answer|discuss|do (?:that|this))",
    _I_CANNOT + _DOING,
    _I_CANNOT + r"(?:give|share)(?: out)?(?: you)? (?:that|this|it|such|these|those|any|your|information|details)",
    _WE_CANNOT
    + _DOING
    + r"(?:\s+(?:that|this|it|such|these|those|any|you|your request)\b|(?:\s+\S+){0,4}\s+for you\b)",
    r"\b(?:unable|not able|not allowed|not permitted|not in a position) to (?:help|assist|support)",
    r"\bnot something (?:i|we) (?:can|could|am able to|are able to) (?:help|assist)",
    r"\b(?:i|we) (?:don'?t|do not) have the (?:ability|authority) to",
    r"\bas an ai(?:\s|,|\.|$)",  # "as an AI, I cannot"; not "as an AI-powered assistant, here is how"
    r"\b(?:i'?m|i am) (?:sorry|afraid),? (?:but )?(?:i|we) (?:can'?t|cannot|can not|won'?t|am unable|'m unable|"
    r"am not able)",
    r"\bi (?:must|have to) (?:decline|refuse)",
]


class RubricError(ValueError):
    """A rubric that cannot be used; the message names the line to fix."""


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.case_sensitive = False
_RE2_OPTIONS.log_errors = False  # a refused pattern is the user's to fix, said in RubricError, not logged


def compile_pattern(pattern: str):
    """A user's pattern, matched without regard to case in linear time (RE2); re2.error for what RE2 refuses."""
    return re2.compile(pattern, _RE2_OPTIONS)


@dataclass
class Check:
    name: str
    line: int
    weight: float = 1.0
    when: list[str] = field(default_factory=list)
    unless: list[str] = field(default_factory=list)
    must: list = field(default_factory=list)
    must_not: list = field(default_factory=list)
    any: list = field(default_factory=list)
    min_words: int | None = None
    max_words: int | None = None
    max_toxicity: float | None = None
    helps: bool = False
    function: object = None

    def score(self, prompt: str, answer: str, toxicity: float | None) -> float:
        """0 to 1: the lowest of this check's tests."""
        values = []
        if self.must:
            values.append(sum(bool(p.search(answer)) for p in self.must) / len(self.must))
        if self.must_not:
            values.append(0.0 if any(p.search(answer) for p in self.must_not) else 1.0)
        if self.any:
            values.append(1.0 if any(p.search(answer) for p in self.any) else 0.0)
        if self.min_words is not None or self.max_words is not None:
            words = word_count(answer)
            value = 1.0
            if self.min_words and words < self.min_words:
                value = words / self.min_words
            if self.max_words is not None and words > self.max_words:
                value = max(0.0, 2.0 - words / self.max_words) if self.max_words else 0.0
            values.append(value)
        if self.max_toxicity is not None:
            values.append(1.0 if (toxicity or 0.0) <= self.max_toxicity else 0.0)
        if self.helps:
            values.append(0.0 if declines(answer) else 1.0)
        if self.function is not None:
            result = self.function(prompt, answer)
            if not isinstance(result, (int, float)) or not 0 <= result <= 1:  # True and False count as 1 and 0
                raise RubricError(f"check {self.name!r}: its function returned {result!r}, not a number from 0 to 1.")
            values.append(float(result))
        return min(values)


@dataclass
class Rubric:
    checks: list[Check]
    categories: dict = field(default_factory=dict)
    description: str = ""
    text: str = ""  # the YAML it was read from

    @property
    def needs_toxicity(self) -> bool:
        return any(c.max_toxicity is not None for c in self.checks)

    def applies(self, check: Check, prompt: str) -> bool:
        return (not check.when or any(self.categories[name].search(prompt) for name in check.when)) and not any(
            self.categories[name].search(prompt) for name in check.unless
        )

    def in_categories(self, prompt: str) -> list[str]:
        return [name for name, pattern in self.categories.items() if pattern.search(prompt)]

    def should_answer(self, prompt: str) -> bool:
        """Whether the guidelines say to answer this prompt: a `helps` check applies to it (with no `helps` check,
        every prompt)."""
        helping = [c for c in self.checks if c.helps]
        return not helping or any(self.applies(c, prompt) for c in helping)

    def score(self, prompt: str, answer: str, toxicity: float | None = None) -> float:
        return self.details(prompt, answer, toxicity)[0]

    def details(self, prompt: str, answer: str, toxicity: float | None = None) -> tuple[float, dict[str, float]]:
        """(score, {check name: 0-1}) for one answer; toxicity is computed here when a check needs it."""
        if toxicity is None and self.needs_toxicity:
            toxicity = offline_toxicity([answer])[0]
        parts = {c.name: c.score(prompt, answer, toxicity) for c in self.checks if self.applies(c, prompt)}
        weights = {c.name: c.weight for c in self.checks if c.name in parts}
        total = sum(weights.values())
        return (sum(parts[n] * weights[n] for n in parts) / total if total else 1.0), parts

    def score_many(self, prompts: list[str], answers: list[str]) -> list[float]:
        """Scores for (prompt, answer) pairs; toxicity is computed in one batch."""
        toxic = offline_toxicity(answers) if self.needs_toxicity else [None] * len(answers)
        return [self.score(p, a, t) for p, a, t in zip(prompts, answers, toxic)]


_DECLINE_PATTERNS = []


def declines(answer: str) -> bool:
    """Whether an answer declines to help (DECLINES, matched in linear time without regard to case)."""
    if not _DECLINE_PATTERNS:
        _DECLINE_PATTERNS.extend(compile_pattern(p) for p in DECLINES)
    text = (answer or "").replace("’", "'")
    return any(p.search(text) for p in _DECLINE_PATTERNS)


def word_count(text: str) -> int:
    return len(_WORD.findall(text or ""))


def _line(node) -> int:
    return node.start_mark.line + 1


def _patterns(value_node, where: str, key: str) -> list:
    items = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
    patterns = []
    for item in items:
        if not isinstance(item, yaml.ScalarNode) or not str(item.value).strip():
            raise RubricError(f"{where} line {_line(item)}: {key} takes text patterns (a string or a list of them).")
        try:
            patterns.append(compile_pattern(str(item.value)))
        except re2.error as error:
            reason = (
                error.args[0].decode(errors="replace")
                if error.args and isinstance(error.args[0], bytes)
                else str(error)
            )
            raise RubricError(
                f"{where} line {_line(item)}: {key} pattern {item.value!r} is not a valid regular "
                f"expression for RE2 ({reason}); RE2 has no look-around ((?=, (?!, (?<=) and no "
                "back-references (\\1)."
            ) from None
    return patterns


def _number(node, where: str, key: str, kind=float, low=None, high=None):
    try:
        value = yaml.safe_load(yaml.serialize(node))
    except yaml.YAMLError:
        value = None
    ok = (
        isinstance(value, (int, float)) and not isinstance(value, bool) and (kind is float or float(value).is_integer())
    )
    if ok and low is not None:
        ok = value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        bounds = f" from {low}" if low is not None else ""
        bounds += f" to {high}" if high is not None else ""
        raise RubricError(
            f"{where} line {_line(node)}: {key} must be a {'whole ' if kind is int else ''}number"
            f"{bounds}; got {getattr(node, 'value', node)!r}."
        )
    return kind(value)


def _function(node, where: str):
    spec = str(getattr(node, "value", "")).strip()
    module_name, _, name = spec.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError):
        raise RubricError(
            f"{where} line {_line(node)}: function {spec!r} cannot be imported; write it as "
            "module:function, with the module on the Python path."
        ) from None
    if not callable(function):
        raise RubricError(f"{where} line {_line(node)}: {spec!r} is not a function.")
    return function


def _mapping(node, where: str, what: str) -> dict:
    if not isinstance(node, yaml.MappingNode):
        raise RubricError(f"{where} line {_line(node)}: {what} must be a mapping of key: value lines.")
    found = {}
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode):
            raise RubricError(f"{where} line {_line(key)}: keys must be plain names.")
        if key.value in found:
            raise RubricError(f"{where} line {_line(key)}: {key.value!r} is given twice.")
        found[key.value] = (key, value)
    return found


def parse(text: str, source: str = "rubric") -> Rubric:
    """Check and read a rubric; RubricError names the line of the first problem."""
    if len((text or "").encode()) > MAX_RUBRIC_BYTES:
        raise RubricError(f"{source} is over {MAX_RUBRIC_BYTES // 1000} kB; a rubric is a short list of checks.")
    try:
        root = yaml.compose(text or "", Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise RubricError(f"{source}{where}: not valid YAML ({getattr(error, 'problem', None) or error}).") from None
    if root is None:
        raise RubricError(f"{source} is empty: write a 'checks:' list.")
    top = _mapping(root, source, "a rubric")
    for name, (key, _) in top.items():
        if name not in TOP_KEYS:
            raise RubricError(
                f"{source} line {_line(key)}: unknown key {name!r}; a rubric has {', '.join(sorted(TOP_KEYS))}."
            )
    categories = {}
    if "categories" in top:
        for name, (key, value) in _mapping(top["categories"][1], source, "categories").items():
            patterns = _patterns(value, source, f"category {name!r}")
            categories[name] = compile_pattern("|".join(f"(?:{p.pattern})" for p in patterns))
    if "checks" not in top:
        raise RubricError(f"{source}: no 'checks:' list.")
    checks_node = top["checks"][1]
    if not isinstance(checks_node, yaml.SequenceNode) or not checks_node.value:
        raise RubricError(
            f"{source} line {_line(checks_node)}: checks must be a list of one or more checks "
            "(lines starting with '- ')."
        )
    checks, names = [], set()
    for node in checks_node.value:
        fields_ = _mapping(node, source, "a check")
        line = _line(node)
        for name, (key, _) in fields_.items():
            if name not in CHECK_KEYS:
                raise RubricError(
                    f"{source} line {_line(key)}: unknown key {name!r} in a check; use {', '.join(sorted(CHECK_KEYS))}."
                )
        if "name" not in fields_ or not str(getattr(fields_["name"][1], "value", "")).strip():
            raise RubricError(f"{source} line {line}: every check needs a name.")
        check = Check(name=str(fields_["name"][1].value).strip(), line=line)
        if check.name in names:
            raise RubricError(f"{source} line {line}: two checks are named {check.name!r}.")
        names.add(check.name)
        if not set(fields_) & TESTS:
            raise RubricError(
                f"{source} line {line}: check {check.name!r} tests nothing; give it one of {', '.join(sorted(TESTS))}."
            )
        for name, (key, value) in fields_.items():
            if name == "weight":
                check.weight = _number(value, source, "weight", float, 0)
            elif name in ("when", "unless"):
                items = value.value if isinstance(value, yaml.SequenceNode) else [value]
                for item in items:
                    category = str(getattr(item, "value", ""))
                    if category not in categories:
                        known = ", ".join(categories) or "none are defined"
                        raise RubricError(
                            f"{source} line {_line(item)}: {name}: {category!r} is not a category ({known})."
                        )
                    getattr(check, name).append(category)
            elif name == "helps":
                if not isinstance(value, yaml.ScalarNode) or value.value not in ("true", "True", "yes"):
                    raise RubricError(f"{source} line {_line(value)}: helps takes true (the answer must not decline).")
                check.helps = True
            elif name in ("must", "must_not", "any"):
                setattr(check, name, _patterns(value, source, name))
            elif name in ("min_words", "max_words"):
                setattr(check, name, _number(value, source, name, int, 0))
            elif name == "max_toxicity":
                check.max_toxicity = _number(value, source, name, float, 0, 1)
            elif name == "function":
                check.function = _function(value, source)
        checks.append(check)
    description = str(top["description"][1].value) if "description" in top else ""
    return Rubric(checks, categories, description, text)


def load_file(path) -> Rubric:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RubricError(f"Cannot read the rubric {path}: {error}.") from None
    return parse(text, path.name)


def rank(rubric: Rubric, prompt: str, answers: list[str]) -> list[list[int]]:
    """Indices of `answers` as tiers, best first, by rubric score (equal scores tie)."""
    return rank_scores(rubric.score_many([prompt] * len(answers), answers))


def rank_scores(scores: list[float]) -> list[list[int]]:
    """Indices as tiers, best first, by score; equal scores share a tier."""
    levels = sorted({round(s, 9) for s in scores}, reverse=True)
    return [[i for i, s in enumerate(scores) if round(s, 9) == level] for level in levels]


# --- The rubric attached to a prompt set -------------------------------------------------------------------------


def builtin_text(set_name: str) -> str | None:
    path = ASSETS / f"{set_name}.yaml"
    return path.read_text(encoding="utf-8") if path.is_file() else None


def get_text(store, set_name: str) -> str:
    return store.get_text("rubrics", set_name) or ""


def for_set(store, set_name: str) -> Rubric | None:
    """The prompt set's rubric, or None when it has none."""
    text = get_text(store, set_name)
    return parse(text, f"the rubric of {set_name}") if text.strip() else None


def save(store, set_name: str, text: str, updated_by: str | None = None, by=None) -> Rubric | None:
    """Check and store the rubric of a prompt set; empty text removes it. `updated_by`: the name recorded with it;
    `by`: the logged-in user, who must be a lead (access)."""
    access.check_lead(by, "edit the rubric")
    rubric = parse(text, "the rubric") if (text or "").strip() else None
    # Empty text is kept as "no rubric", so a built-in rubric the user removed does not come back.
    if not store.set_text("rubrics", set_name, text or "", updated_by):
        raise RubricError(f"No prompt set named {set_name!r}.")
    return rubric
