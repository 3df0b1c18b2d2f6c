"""The rule layer of the injection detector: named patterns for the classic payloads and jailbreak
techniques, run after undoing the usual disguises.

Disguises undone before matching: Unicode look-alike letters (Cyrillic, Greek), leetspeak
("1gn0r3"), and letters split by spaces or punctuation ("i.g.n.o.r.e"), on top of what
``normalize`` already does (NFKC, zero-width characters, case). Payloads hidden in base64 or Morse
code are decoded by ``decoded_payloads`` and checked in turn. The rule names appear in verdicts
as ``rule:<name>``; docs/guardrails.md lists what each catches.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from .injection_features import normalize


@dataclass(frozen=True, slots=True)
class Rule:
    """A named pattern, tried only when one of its keywords is in the text.

    Every match of ``pattern`` must contain one of ``keywords``: the substring test costs a
    microsecond, the regex tens of them, and most texts contain none of the keywords.
    """

    name: str
    keywords: tuple[str, ...]
    pattern: re.Pattern[str]

    def search(self, text: str) -> bool:
        return any(k in text for k in self.keywords) and self.pattern.search(text) is not None


def _phrases(firsts: str, seconds: str) -> tuple[str, ...]:
    """Every "first second" pair: the keywords of a rule whose match holds such a pair."""
    return tuple(f"{a} {b}" for a in firsts.split() for b in seconds.split())


_W = r"(?:\w+\W+)"  # one filler word and what follows it
# One Rule per alternative, each with the keywords that alternative cannot match without:
# normalised text has single spaces, so multi-word keywords are exact.
RULES = (
    Rule(
        "ignore-previous",
        (
            "ignor",
            "disregard",
            "forget",
            "overrid",
            "overwrit",
            "bypass",
            "skip",
            "neglect",
            "abandon",
            "drop",
            "discard",
        ),
        re.compile(
            r"\b(?:ignore|disregard|forget|override|overwrite|bypass|skip|neglect|abandon|drop|discard)\W+"
            rf"{_W}{{0,3}}(?:previous|prior|preceding|above|earlier|foregoing|former|original|initial|all)\W+"
            rf"{_W}{{0,2}}(?:instructions?|directions?|directives?|prompts?|rules|guidelines|commands?|"
            r"context|text|messages?|orders|guidance)\b"
        ),
    ),
    Rule(  # the same in German, French, Spanish, Italian, Portuguese and Dutch
        "ignore-previous",
        (
            "ignorier",
            "vergiss",
            "vergessen",
            "ignore",
            "oubli",
            "ignora",
            "olvid",
            "dimentic",
            "esque",
            "negeer",
            "vergeet",
        ),
        re.compile(
            r"\b(?:ignorier\w*|vergiss|vergessen sie)\b(?: \w+){0,3}? (?:vorherigen?|bisherigen?|obigen?|alle[ns]?|"
            r"vorangegangenen?|früheren?) (?:\w+ )?(?:anweisungen|instruktionen|befehle|regeln|vorgaben)"
            r"|\b(?:ignore[zr]?|oublie[zr]?)\b(?: \w+){0,3}? (?:instructions?|consignes|règles|directives) "
            r"(?:précédentes?|antérieures?|ci-dessus)"
            r"|\b(?:ignora\w*|ignore|olvid\w*|dimentic\w*|esque[çc]\w*)\b(?: \w+){0,3}? "
            r"(?:instrucciones|reglas|indicaciones|istruzioni|regole|instruções|instrucoes|regras) "
            r"(?:anteriores|previas|precedenti|prévias|de arriba|di sopra|acima)"
            r"|\b(?:negeer|vergeet)\b(?: \w+){0,3}? (?:vorige|eerdere|voorgaande|bovenstaande) "
            r"(?:instructies|regels|opdrachten)"
        ),
    ),
    Rule(  # Chinese, Russian, Japanese
        "ignore-previous",
        ("忽略", "игнорир", "забудь", "無視"),
        re.compile(
            r"忽略(?:你|掉)?(?:之前|以上|上面|先前|前面|所有)(?:的)?(?:所有|全部)?(?:的)?(?:指令|指示|规则|提示)"
            r"|(?:игнорир\w*|забудь)(?: \w+){0,2}? (?:предыдущие|прежние|все|свои) (?:\w+ )?(?:инструкции|указания|правила)"
            r"|(?:以前|前|上記|これまで)の(?:指示|命令|ルール)(?:を)?(?:すべて|全て)?無視"
        ),
    ),
    Rule(
        "new-instructions",
        _phrases("new updated real actual true system", "instruction directive rules"),
        re.compile(
            r"\b(?:new|updated|real|actual|true) (?:system )?(?:instructions?|directives?|rules) ?(?::|follow\b)"
        ),
    ),
    Rule(
        "new-instructions",
        ("overrid", "supersede", "replace"),
        re.compile(
            r"\binstructions?\W+(?:\w+\W+){0,3}?(?:override|supersede|replace)s?\W+(?:\w+\W+){0,2}?"
            r"(?:previous|prior|all|any|other)\b"
        ),
    ),
    Rule(
        "new-instructions",
        ("instructions are", "instructions were"),
        re.compile(
            r"\b(?:previous|prior|above|all) instructions (?:are|were) (?:false|void|wrong|cancelled|obsolete)"
        ),
    ),
    Rule(
        "reveal-prompt",
        (
            *_phrases("system initial original hidden secret", "prompt instruction message rules"),
            "preprompt",
            "pre-prompt",
            *_phrases("instruction instructions", "you given above"),
        ),
        re.compile(
            r"\b(?:reveal|show|print|repeat|output|display|tell|give|list|leak|spell|write|recite|dump|echo|"
            r"share|respond with|what (?:is|are|was|were)|see|read|access|change|modify|alter|edit)\W+"
            rf"{_W}{{0,4}}(?:your|the|all|my)\W+{_W}{{0,2}}"
            r"(?:(?:system|initial|original|hidden|secret) prompt|pre-?prompt|"
            r"(?:system|initial|original|hidden|secret) (?:instructions?|message|rules)|"
            r"instructions? (?:you (?:were|have been|got) given|given to you|above|you have|you received))"
        ),
    ),
    Rule("persona-override", ("do anything now",), re.compile(r"\bdo anything now\b")),
    Rule(
        "persona-override",
        (" mode",),
        re.compile(
            r"\b(?:dan|stan|dude|god|jailbreak|jailbroken|evil|rtm) mode\b(?! of)"
            r"|\bdeveloper mode (?:enabled|output|response)|\bsimulat\w* developer mode"
        ),
    ),
    Rule("persona-override", ("stands for",), re.compile(r"\bdan\W+(?:\w+\W+){0,2}?stands for\b")),
    Rule(
        "persona-override",
        ("confines of", "restrictions of", "filters of", "limitations of"),
        re.compile(
            r"\b(?:free|freed|broken free|liberated) (?:of|from) (?:all |any |the )?(?:typical )?"
            r"(?:confines|restrictions|filters|limitations) of (?:ai|an ai|openai|chatgpt|a language model)"
        ),
    ),
    Rule(
        "persona-override",
        ("openai", "anthropic", "chatgpt"),
        re.compile(
            r"\b(?:ignores?|bypass(?:es)?|breaks?|not bound by|doesn't follow|does not follow|free of)\W+"
            r"(?:\w+\W+){0,3}?(?:openai|anthropic|chatgpt)(?:'s)?\W+(?:\w+\W+){0,2}?(?:content |usage )?"
            r"(?:polic(?:y|ies)|guidelines|rules|restrictions|filters)"
        ),
    ),
    # Refusal suppression and prefix injection, two documented jailbreak techniques: forbid the
    # model its refusals and disclaimers, or dictate the compliant first words of its answer.
    Rule(
        "refusal-suppression",
        ("refuse", "decline", "reject"),
        # Refusing needs an object: "memory does not decline with age" is not a jailbreak.
        re.compile(
            r"\b(?:never|not|don't|do not|cannot|can't|won't|will not|must not|mustn't|shall not|should not|"
            r"shouldn't) (?:ever )?(?:refuse|decline|reject)s? (?:\w+ ){0,2}?(?:requests?|questions?|prompts?|"
            r"anything|to (?:answer|respond|reply|comply|help|do|generate|write|provide)|orders?|instructions?|"
            r"commands?|tasks?)\b|\bnever (?:refuses|declines)\b"
        ),
    ),
    Rule(
        "refusal-suppression",
        ("sorry", "as an ai", "i cannot", "i can't", "warning", "disclaimer"),
        re.compile(
            r"\b(?:do not|don't|never|must not|will not|won't|should not|shouldn't) (?:\w+ ){0,3}?"
            r"(?:say|mention|include|add|write|respond with|use|apologi[sz]e) (?:\w+ ){0,3}?[\"'“]?"
            r"(?:i'm sorry|i am sorry|sorry|as an ai|i cannot|i can't|warnings?|disclaimers?)"
        ),
    ),
    Rule(
        "refusal-suppression",
        ("sure", "absolutely", "of course", "certainly"),
        re.compile(
            r"\b(?:start|begin) (?:your|each|every|all) (?:\w+ )?(?:responses?|replies|reply|answers?|outputs?|"
            r"messages?) with [\"'“]?(?:sure|absolutely|of course|certainly)"
        ),
    ),
    Rule(
        "refusal-suppression",
        ("regardless of",),
        re.compile(r"\bregardless of (?:\w+ ){0,2}(?:ethical|moral|legal)\w*\b"),
    ),
    Rule(
        "disable-safety",
        (
            "filter",
            "guideline",
            "restriction",
            "guardrail",
            "safeguard",
            "rules",
            "safety",
            "content",
            "ethic",
            "moral",
        ),
        re.compile(
            r"\b(?:disable|turn off|switch off|deactivate|remove|bypass|lift|drop) (?:all |any )?(?:of )?your "
            r"(?:\w+ )?(?:(?:safety|content|ethical|moral) (?:filters?|guidelines|restrictions|guardrails|safeguards|"
            r"rules|settings|protocols|mode)|filters|guidelines|restrictions|guardrails|safeguards|rules)\b"
        ),
    ),
    # Markers of the shared jailbreak templates: DAN's tagged answers and the slot for the prompt.
    Rule(
        "jailbreak-template",
        ("jailbreak", "classic]", "prompt here", "prompt]"),
        re.compile(
            r"\[?🔓 ?jailbreak\]?|\[🔒 ?classic\]|(?:^| )/jailbreak\b|\[(?:insert |your )?prompt(?: here)?\]"
        ),
    ),
    # Chat-template tokens and headers that fake a system or instruction turn.
    Rule(
        "role-markup",
        ("<|", "<im_", "<system", "<endoftext", "<start_header_id"),
        re.compile(r"<\|?(?:im_start|im_end|system|endoftext|start_header_id)\|?>"),
    ),
    Rule(
        "role-markup",
        ("[inst]", "[/inst]", "[sys]", "[/sys]", "<<sys>>", "<</sys>>"),
        re.compile(r"\[/?(?:inst|sys)\]|<</?sys>>"),
    ),
    Rule("role-markup", ("##",), re.compile(r"(?:^| )#{2,} ?(?:system|new instructions?)\b")),
    Rule(
        "role-markup",
        _phrases("system admin developer", "override message"),
        re.compile(r"\b(?:system|admin|developer) (?:override|message) ?:"),
    ),
)
# The same phrases with every space and punctuation mark gone, for "i g n o r e" and "ign-ore".
COMPACT_RULES = (
    Rule(
        "ignore-previous",
        ("ignor", "disregard", "forget"),
        re.compile(
            r"(?:ignore|disregard|forget)(?:all|the|any|your|my|of)*(?:previous|prior|preceding|above|earlier)"
            r"(?:instructions?|directions?|prompts?|rules|guidelines|commands?)"
        ),
    ),
    Rule(
        "reveal-prompt",
        ("reveal", "print", "show", "repeat", "output"),
        re.compile(
            r"(?:reveal|print|show|repeat|output)(?:your|the|me)*(?:systemprompt|initialprompt|hiddenprompt)"
        ),
    ),
    Rule("persona-override", ("doanythingnow",), re.compile("doanythingnow")),
)
# Cyrillic and Greek letters that look Latin (NFKC leaves them alone).
_CONFUSABLES = str.maketrans("аеорсухіјѕԁɡοαειкνтυρ", "aeopcyxijsdgoaeikvtup")
_CONFUSABLE_RX = re.compile("[аеорсухіјѕԁɡοαειкνтυρ]")
_LEET_CHARS = b"013457@$|!"
_LEET = bytes.maketrans(_LEET_CHARS, b"oieastasii")
_NON_LETTERS = bytes(c for c in range(256) if not (97 <= c <= 122))
_BASE64_RX = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")  # 12+ bytes: "ignore the rules" is 16
_MORSE_RX = re.compile(r"(?:[.\-]{1,7}[ /]+){8,}[.\-]{1,7}")
_MORSE_CODES = (
    ".- -... -.-. -.. . ..-. --. .... .. .--- -.- .-.. -- -. --- .--. --.- .-. ... - ..- ...- .-- -..- -.-- --.. "
    "----- .---- ..--- ...-- ....- ..... -.... --... ---.. ----. .-.-.- --..-- ..--.. -.-.--"
)
_MORSE = dict(zip(_MORSE_CODES.split(), "abcdefghijklmnopqrstuvwxyz0123456789.,?!", strict=True))


class RuleSet:
    """The rule layer alone: ``match`` returns the name of the first rule that fires, or None."""

    def __init__(
        self, rules: tuple[Rule, ...] = RULES, compact_rules: tuple[Rule, ...] = COMPACT_RULES
    ) -> None:
        self.rules = rules
        self.compact_rules = compact_rules

    def match(self, text: str, normalized: str | None = None, decode: bool = True) -> str | None:
        """``normalized`` saves normalising again; ``decode=False`` skips the encoded payloads."""
        hit = self._match_normalized(normalize(text) if normalized is None else normalized)
        if hit or not decode:
            return hit
        for decoded in decoded_payloads(text):
            if self._match_normalized(normalize(decoded)):
                return "encoded-instructions"
        return None

    def _match_normalized(self, text: str) -> str | None:
        variants = [text]
        if not text.isascii() and _CONFUSABLE_RX.search(text):
            # Latin look-alikes folded: a second variant, as real Cyrillic or Greek has rules too.
            text = text.translate(_CONFUSABLES)
            variants.append(text)
        # Leetspeak and letters split by spaces or punctuation defeat word boundaries: undo both.
        ascii_bytes = text.encode("ascii", "ignore")
        leet = ascii_bytes.translate(_LEET)
        if len(ascii_bytes) - len(ascii_bytes.translate(None, _LEET_CHARS)) >= 3:
            variants.append(leet.decode())
        for variant in variants:
            for rule in self.rules:
                if rule.search(variant):
                    return rule.name
        compact = leet.translate(None, _NON_LETTERS).decode()
        for rule in self.compact_rules:
            if rule.search(compact):
                return rule.name
        return None


def decoded_payloads(text: str, limit: int = 4) -> list[str]:
    """Readable text hidden in base64 runs or Morse code (at most ``limit`` pieces)."""
    out: list[str] = []
    # Cheap tests first: base64 worth decoding is one long token, Morse is full of ".-" and "-.".
    if max(map(len, text.split()), default=0) >= 16:
        for m in _BASE64_RX.finditer(text):
            chunk = m.group()
            try:
                decoded = base64.b64decode(chunk + "=" * (-len(chunk) % 4), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                continue
            if decoded and sum(c.isprintable() or c.isspace() for c in decoded) / len(decoded) > 0.95:
                out.append(decoded)
                if len(out) >= limit:
                    return out
    if text.count(".-") + text.count("-.") >= 8:
        for m in _MORSE_RX.finditer(text):
            words = re.split(r"\s*/\s*|\s{2,}", m.group())
            out.append(" ".join("".join(_MORSE.get(code, "") for code in word.split()) for word in words))
            if len(out) >= limit:
                break
    return out
