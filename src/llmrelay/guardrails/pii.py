"""PII and secrets redaction: recognisers of our own (a regex finds candidates, code validates
them), applied to whole texts or to a stream of text deltas.

    redactor = PiiRedactor()                      # every type; or types=["EMAIL", "secrets"]
    text, spans = redactor.redact("mail bob@example.com")   # "mail [EMAIL REDACTED]"
    stream = redactor.stream()
    out = stream.feed("mail bob@exa") + stream.feed("mple.com now") + stream.flush()

A ``StreamRedactor`` emits a delta's text only once no PII can cover it: each recogniser knows
the longest suffix of the text so far that could still grow into one of its matches (its
``tail``), so what is held back is that suffix, usually the last word, and what is emitted is
final. The streamed output, joined, equals ``redact`` of the whole text (see docs/pii.md for why).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from ..errors import ConfigError


class Span(NamedTuple):
    type: str
    start: int
    end: int  # exclusive


def token(type_: str) -> str:
    return f"[{type_} REDACTED]"


# A check gets the text and a candidate match and returns the span to redact (possibly narrower
# than the match) or None. It may read up to CONTEXT characters before the match and a
# recogniser's `after` characters after it, never more.
Check = Callable[[str, re.Match[str]], "tuple[int, int] | None"]
CONTEXT = 64


class Recogniser:
    """One kind of candidate: ``pattern`` finds it, ``check`` validates it.

    ``tail`` matches (anchored at the end) every suffix of a text that a candidate could start
    at and still be incomplete or undecided when the text ends there. It must be looser than
    ``pattern``, never stricter: it is what a stream holds back. ``max_len`` bounds how far from
    its start a candidate can look, so older text is never held. ``after`` is how many characters
    past its end ``check`` reads.
    """

    __slots__ = ("after", "check", "max_len", "needs", "pattern", "priority", "tail", "type")

    def __init__(
        self,
        type_: str,
        pattern: str,
        tail: str,
        max_len: int,
        check: Check | None = None,
        *,
        priority: int,
        after: int = 0,
        needs: str | None = None,
        flags: int = 0,
    ) -> None:
        self.type = type_
        self.pattern = re.compile(pattern, flags)
        self.tail = re.compile(f"(?:{tail})\\Z", flags)
        self.max_len = max_len
        self.check = check or (lambda _text, m: m.span())
        self.priority = priority
        self.after = after
        # A regex every candidate contains: when the text has none, the scan is skipped.
        self.needs = re.compile(needs) if needs else None

    def hold(self, text: str, pos: int) -> int:
        """Where the suffix of ``text`` that could still become a match starts (len if none)."""
        m = self.tail.search(text, max(pos, len(text) - self.max_len))
        return m.start() if m else len(text)

    def scan(self, text: str, pos: int, limit: int) -> Iterator[tuple[int, int, tuple[int, int] | None]]:
        """Candidates starting in [pos, limit): (start, end, accepted span or None). After a
        rejected candidate the scan resumes one character later, after an accepted one at its end."""
        if self.needs and not self.needs.search(text, pos):
            return
        search, check = self.pattern.search, self.check
        while (m := search(text, pos)) is not None and m.start() < limit:
            span = check(text, m)
            yield m.start(), m.end(), span
            pos = span[1] if span else m.start() + 1


# --- validators -----------------------------------------------------------------------------


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# (lowest prefix, highest prefix, lengths): issuer ranges of the common brands.
_CARD_RANGES = (
    ("4", "4", (13, 16, 19)),  # Visa
    ("51", "55", (16,)),  # Mastercard
    ("2221", "2720", (16,)),  # Mastercard 2-series
    ("34", "34", (15,)),  # Amex
    ("37", "37", (15,)),
    ("30", "30", (14, 15, 16, 17, 18, 19)),  # Diners
    ("36", "36", (14, 15, 16, 17, 18, 19)),
    ("38", "39", (14, 15, 16, 17, 18, 19)),
    ("35", "35", (16, 17, 18, 19)),  # JCB
    ("1800", "1800", (15,)),
    ("2131", "2131", (15,)),
    ("2200", "2204", (16, 17, 18, 19)),  # Mir
    ("6", "6", (12, 13, 14, 15, 16, 17, 18, 19)),  # Discover, UnionPay, Maestro 6x, RuPay
    ("50", "50", (12, 13, 14, 15, 16, 17, 18, 19)),  # Maestro
    ("56", "59", (12, 13, 14, 15, 16, 17, 18, 19)),
)


def _card(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    digits = re.sub(r"\D", "", m.group())
    for low, high, lengths in _CARD_RANGES:
        if low <= digits[: len(low)] <= high and len(digits) in lengths:
            return m.span() if _luhn(digits) else None
    return None


_SSN_CONTEXT = re.compile(r"(?i)\b(?:ssn|ss#|social\s+security|social\s+sec)\b")


def _ssn(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    digits = re.sub(r"\D", "", m.group())
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return None
    if len(m.group()) == 9 and not _SSN_CONTEXT.search(text, max(0, m.start() - 40), m.start()):
        return None  # nine bare digits are an SSN only where the text says so
    return m.span()


# Country code -> IBAN length (the SWIFT IBAN registry).
_IBAN_LENGTHS = dict(
    (cc, int(n))
    for cc, n in re.findall(
        r"([A-Z]{2})(\d\d)",
        "AD24AE23AL28AT20AZ28BA20BE16BG22BH22BI27BR29BY28CH21CR22CY28CZ24DE22DJ27DK18DO28EE20EG29"
        "ES24FI18FK18FO18FR27GB22GE22GI23GL18GR27GT28HR21HU28IE22IL23IQ23IS26IT27JO30KW30KZ20LB28"
        "LC32LI21LT20LU20LV21LY25MC27MD24ME22MK19MN20MR27MT31MU30NI28NL18NO15OM23PK24PL28PS29PT25"
        "QA29RO24RS22RU33SA24SC31SD18SE24SI19SK24SM27SO23ST25SV28TL23TN24TR26UA29VA22VG24XK20YE30",
    )
)


def _iban(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    s = m.group()
    length = _IBAN_LENGTHS.get(s[:2].upper())
    if length is None:
        return None
    # The candidate may run into the next word: keep exactly the country's length, which must
    # end where a group does.
    end, count = 0, 0
    while count < length and end < len(s):
        if s[end] != " ":
            count += 1
        end += 1
    if count < length or (end < len(s) and s[end] != " "):
        return None
    iban = s[:end].replace(" ", "").upper()
    rearranged = iban[4:] + iban[:4]
    if int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 != 1:
        return None
    return m.start(), m.start() + end


_VERSION_BEFORE = re.compile(r"(?i)(?:\bv|\bversion|\bver\.?|\brelease|\bbuild)\s*\Z")


def _ipv4(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    octets = m.group().split(".")
    if any(len(o) > 1 and o[0] == "0" or int(o) > 255 for o in octets):
        return None
    if _VERSION_BEFORE.search(text[max(0, m.start() - 12) : m.start()]):
        return None
    return _ip(m)


def _ipv6(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    if sum(ch in "0123456789abcdefABCDEF" for ch in m.group()) < 4:
        return None  # "a::b" in code is not an address anyone needs hidden
    return _ip(m)


def _ip(m: re.Match[str]) -> tuple[int, int] | None:
    if "." in m.group() and ":" not in m.group():  # IPv4, its octets checked: skip the slow parse
        return None if m.group().startswith(("127.", "0.0.0.0")) else m.span()
    try:
        ip = ipaddress.ip_address(m.group())
    except ValueError:
        return None
    # Loopback and 0.0.0.0 / :: name no machine; redacting them only breaks code answers.
    return None if ip.is_loopback or ip.is_unspecified else m.span()


_PHONE_BEFORE = re.compile(
    r"(?i)\b(?:phone|tel|telephone|mobile|cell|cellphone|fax|call|calling|called|dial|text|sms"
    r"|whatsapp|contact|reach|desk|landline|hotline|answering|ring)\b"
)
_PHONE_AFTER = re.compile(
    r"(?i)[ \t]{0,3}[-(,/]?[ \t]{0,2}(?:office|fax|mobile|cell|home|work|desk|phone|tel)\b"
)
_PHONE_AFTER_LEN = 18  # the longest text _PHONE_AFTER can read
_NANP = re.compile(r"(?:(?:\+?1|001)[ .-]?)?(?:\(\d{3}\)[ .-]?|\d{3}([.-]))\d{3}(?(1)\1|[ .-])\d{4}")


def _phone(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    number = m.group("number")
    if len(number) < 6:
        return None  # most candidates: any short number
    digits = re.sub(r"\D", "", number)
    if not 6 <= len(digits) <= 15:
        return None
    groups = re.findall(r"\d+", number)
    if _looks_like_date(groups) or list(map(len, groups)) == [3, 2, 4]:
        return None  # a date, or shaped like an SSN (valid or not)
    if _phone_shaped(number, digits, groups):
        return m.span()
    # Any other run of digit groups is a phone number only where the text says so.
    if len(digits) > 12 or min(map(len, groups)) < 2:
        return None
    if _PHONE_BEFORE.search(text, max(0, m.start() - 40), m.start()) or _PHONE_AFTER.match(text, m.end()):
        return m.span()
    return None


def _phone_shaped(number: str, digits: str, groups: list[str]) -> bool:
    """Formats that say "phone number" by themselves."""
    n = len(digits)
    if number[0] == "+" or number.startswith("00"):  # international: +44 20 7946 0958
        return n >= 8
    if number[0] == "(":  # area code in parentheses: (08) 8747 6301
        return n >= 7
    if digits[0] == "0":  # national trunk prefix: 020 7946 0958, 06-24312407
        return n >= 9 and len(groups) >= 2 and min(map(len, groups)) >= 2
    return _NANP.fullmatch(number) is not None  # 415-555-0132, 1 415.555.0132


def _looks_like_date(groups: list[str]) -> bool:
    if len(groups) < 3:
        return False
    (a, b, c), (la, lb, lc) = map(int, groups[:3]), map(len, groups[:3])
    if la == 4 and lb <= 2 and lc <= 2:
        return 1000 <= a <= 2999 and 1 <= b <= 12 and 1 <= c <= 31
    if lc in (2, 4) and la <= 2 and lb <= 2:
        return 1 <= a <= 31 and 1 <= b <= 31 and min(a, b) <= 12 and (lc == 2 or 1000 <= c <= 2999)
    return False


def _api_key(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    s = m.group()
    if s.startswith("sk-") and not (re.search(r"\d", s) and re.search(r"[A-Za-z]", s[3:])):
        return None  # "sk-" and a hyphenated phrase is prose, not a key
    return m.span()


_AWS_SECRET_BEFORE = re.compile(r"(?i)aws|secret")


def _aws_secret(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    s = m.group()
    if not (re.search(r"[A-Z]", s) and re.search(r"[a-z]", s) and re.search(r"\d", s)):
        return None  # hex digests and words are not keys
    return m.span() if _AWS_SECRET_BEFORE.search(text, max(0, m.start() - 48), m.start()) else None


# --- the recognisers ------------------------------------------------------------------------

_KEY_PREFIXES = (
    *("sk-", "github_pat_", "xapp-", "AIza", "glpat-", "hf_"),
    *(f"gh{c}_" for c in "pousr"),
    *(f"xox{c}-" for c in "abposr"),
    *(f"{a}k_{b}_" for a in "sr" for b in ("live", "test")),
)


def _prefix_tail(prefixes: Iterable[str]) -> str:
    """A tail for tokens that start with one of ``prefixes``: a whole prefix and what follows,
    or a prefix cut short."""
    partial = {p[:i] for p in prefixes for i in range(1, len(p))}
    return rf"(?<![\w-])(?:(?:{'|'.join(map(re.escape, prefixes))})[\w-]*|{'|'.join(map(re.escape, sorted(partial)))})"


_PEM_LABEL = r"-----{} (?:[A-Z0-9]{{1,12}} ){{0,2}}PRIVATE KEY(?: BLOCK)?-----"
_PEM_BEGIN, _PEM_END = _PEM_LABEL.format("BEGIN"), _PEM_LABEL.format("END")
PEM_CAP = 8192  # a key block longer than this (or without its END line) is cut here
_TOKEN_END = r"(?![\w-])"

RECOGNISERS: tuple[Recogniser, ...] = (
    Recogniser(
        "PRIVATE_KEY",
        # Up to the END line; without one (a cut-off block), as far as its header lines and
        # base64 lines go.
        rf"{_PEM_BEGIN}(?:[\s\S]{{0,{PEM_CAP}}}?{_PEM_END}"
        r"|(?:\s{0,4}[A-Za-z-]{1,20}:[^\n]{0,80}){0,4}(?:\s{0,4}[A-Za-z0-9+/=]{16,76}){0,100})",
        # A partial BEGIN line, or a whole one not yet followed by its END line.
        rf"-{{1,5}}(?:B(?:E(?:G(?:I(?:N(?: [A-Z0-9 ]*-{{0,5}})?)?)?)?)?)?|{_PEM_BEGIN}(?:(?!{_PEM_END})[\s\S])*",
        max_len=60 + max(PEM_CAP + 60, 4 * 105 + 100 * 80),
        needs="-----BEGIN",
        priority=100,
    ),
    Recogniser(
        "JWT",
        rf"eyJ(?<![\w-]eyJ)[\w-]{{8,4096}}\.eyJ[\w-]{{8,4096}}\.[\w-]{{0,4096}}{_TOKEN_END}",
        r"(?<![\w-])e(?:y(?:J[\w.-]*)?)?",
        max_len=3 * 4096 + 10,
        needs="eyJ",
        priority=90,
        flags=re.ASCII,
    ),
    Recogniser(
        "API_KEY",
        r"(?<![\w-])(?:sk-[A-Za-z0-9][\w-]{19,250}|gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_\w{22,251}"
        r"|xox[abposr]-[A-Za-z0-9-]{10,250}|xapp-\d-[A-Za-z0-9-]{10,250}|[sr]k_(?:live|test)_[A-Za-z0-9]{16,250}"
        rf"|AIza[\w-]{{35}}|glpat-[\w-]{{20,50}}|hf_[A-Za-z0-9]{{30,50}}){_TOKEN_END}",
        _prefix_tail(_KEY_PREFIXES),
        max_len=270,
        check=_api_key,
        needs=r"sk-|gh[pousr]_|github_pat_|xox|xapp-|[sr]k_|AIza|glpat-|hf_",
        priority=80,
        flags=re.ASCII,
    ),
    Recogniser(
        "AWS_ACCESS_KEY",
        r"A(?<![A-Za-z0-9]A)(?:KIA|SIA|BIA|CCA|GPA|IDA|IPA|NPA|NVA|ROA|PKA|SCA)[A-Z0-9]{16}(?![A-Za-z0-9])",
        r"(?<![A-Za-z0-9])A[A-Z0-9]*",
        max_len=21,
        priority=80,
    ),
    Recogniser(
        "AWS_SECRET_KEY",
        r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])",
        r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]+",
        max_len=41,
        check=_aws_secret,
        priority=70,
    ),
    Recogniser(
        "EMAIL",
        r"(?<![\w.%+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?"
        r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}(?![\w-]|\.[A-Za-z0-9])",
        r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}(?:@[A-Za-z0-9.-]*)?",
        max_len=64 + 1 + 8 * 64 + 24 + 2,
        needs="@",
        priority=60,
    ),
    Recogniser(
        "IBAN",
        r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){10,30}(?![A-Za-z0-9])",
        r"(?<![A-Za-z0-9])[A-Za-z](?:[A-Za-z](?:\d(?:\d(?: ?[A-Za-z0-9])* ?)?)?)?",
        max_len=4 + 60 + 1,
        check=_iban,
        needs=r"\d\d",
        priority=50,
    ),
    Recogniser(
        "CREDIT_CARD",
        r"(?<![\w.+-])(?:\d{4}([ -]?)\d{4}\1\d{4}(?:\1\d{1,4}){1,2}|\d{4}([ -]?)\d{6}\2\d{4,5}|\d{12,19})(?!\w|[.-]\d)",
        r"(?<![\w.+-])\d[\d -]*[.-]?",
        max_len=27,
        check=_card,
        needs=r"\d{4}",
        priority=40,
    ),
    Recogniser(
        "SSN",
        r"(?<![\w-])(?:\d{3}([- ])\d{2}\1\d{4}|\d{9})(?!\w|-\d)",
        r"(?<![\w-])\d[\d -]*",
        max_len=13,
        check=_ssn,
        needs=r"\d{3}",
        priority=30,
    ),
    Recogniser(
        "IP_ADDRESS",
        r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)",
        r"(?<![\w.])\d[\d.]*",
        max_len=17,
        check=_ipv4,
        needs=r"\d\.\d",
        priority=20,
    ),
    Recogniser(
        "IP_ADDRESS",
        r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:(?<=:)\d{1,3}(?:\.\d{1,3}){3})?(?![\w:]|\.\d)",
        r"(?<![\w:.])[0-9A-Fa-f:][0-9A-Fa-f:.]*",
        max_len=58,
        check=_ipv6,
        needs=":",
        priority=20,
    ),
    Recogniser(
        "PHONE",
        r"(?<![\w+@/.#$€£-])(?P<number>(?:(?:\+|00)\d{1,3}(?:[ .-]?\(0\))?[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?"
        r"\d{1,12}(?:[ .-]\d{1,12}){0,6})(?: ?(?:x|ext\.?) ?\d{1,6})?(?![\w@]|[.-]\d)",
        r"(?<![\w+@/.#$€£-])[+(\d][\d ().+xet-]*",
        max_len=130,
        check=_phone,
        needs=r"\d",
        priority=10,
        after=_PHONE_AFTER_LEN,
    ),
)

PII_TYPES = ("EMAIL", "PHONE", "CREDIT_CARD", "SSN", "IBAN", "IP_ADDRESS")
SECRET_TYPES = ("API_KEY", "AWS_ACCESS_KEY", "AWS_SECRET_KEY", "PRIVATE_KEY", "JWT")
ALL_TYPES = PII_TYPES + SECRET_TYPES
_GROUPS = {"pii": PII_TYPES, "secrets": SECRET_TYPES, "all": ALL_TYPES}


def _select(types: Iterable[str] | None) -> tuple[Recogniser, ...]:
    if types is None:
        return RECOGNISERS
    if isinstance(types, str):
        types = [types]
    wanted: set[str] = set()
    for name in types:
        key = name.strip()
        if key.lower() in _GROUPS:
            wanted.update(_GROUPS[key.lower()])
        elif key.upper() in ALL_TYPES:
            wanted.add(key.upper())
        else:
            known = ", ".join([*_GROUPS, *ALL_TYPES])
            raise ConfigError(f"Unknown PII type {name!r}; known types and groups: {known}.")
    return tuple(r for r in RECOGNISERS if r.type in wanted)


# --- finding and redacting ------------------------------------------------------------------


def _scan(recognisers: tuple[Recogniser, ...], text: str, pos: int, final: bool) -> tuple[int, list[Span]]:
    """Find the spans in ``text[pos:]`` and how far they are final: ``(cut, spans)``, with every
    span ending at or before ``cut``. With ``final`` the text is complete and cut is its end.
    Otherwise cut stops before anything more text could change: a suffix a recogniser holds,
    a candidate whose check reads past the end, and any accepted span crossing that point."""
    n = len(text)
    cut = n if final else min(r.hold(text, pos) for r in recognisers) if recognisers else n
    if cut == pos:
        return pos, []
    limit = cut
    accepted: list[tuple[int, int, Recogniser]] = []
    for r in recognisers:
        for start, end, span in r.scan(text, pos, limit):
            if not final and end + r.after > n:
                cut = min(cut, start)
                break
            if span:
                accepted.append((*span, r))
    # A rejected candidate may be cut through (the scan resumes one character after its start
    # anyway), an accepted span may not (the scan resumes at its end).
    moved = True
    while moved:
        moved = False
        for start, end, _ in accepted:
            if start < cut < end:
                cut, moved = start, True
    chosen: list[tuple[int, int, Recogniser]] = []
    # Where two recognisers claim overlapping text, the higher priority wins (a card is not a phone).
    for start, end, r in sorted(accepted, key=lambda c: (-c[2].priority, c[0])):
        if end <= cut and all(end <= s or start >= e for s, e, _ in chosen):
            chosen.append((start, end, r))
    chosen.sort(key=lambda c: c[0])
    return cut, [Span(r.type, s, e) for s, e, r in chosen]


def _render(text: str, start: int, end: int, spans: list[Span]) -> str:
    out, at = [], start
    for span in spans:
        out.append(text[at : span.start])
        out.append(token(span.type))
        at = span.end
    out.append(text[at:end])
    return "".join(out)


class PiiRedactor:
    """Finds and redacts PII and secrets. ``types``: names from ``ALL_TYPES`` and groups
    ``pii``, ``secrets``, ``all``; None means all. Stateless and safe to share."""

    def __init__(self, types: Iterable[str] | None = None) -> None:
        self.recognisers = _select(types)
        self.types = tuple(t for t in ALL_TYPES if any(r.type == t for r in self.recognisers))

    def find(self, text: str) -> list[Span]:
        return _scan(self.recognisers, text, 0, final=True)[1]

    def redact(self, text: str) -> tuple[str, list[Span]]:
        spans = self.find(text)
        return (_render(text, 0, len(text), spans) if spans else text), spans

    def stream(self) -> StreamRedactor:
        return StreamRedactor(self.recognisers)


class StreamRedactor:
    """Redacts text arriving in deltas. ``feed(delta)`` returns the text that is now final
    (possibly ""), ``flush()`` the rest at the end; ``spans`` lists what was redacted, in
    offsets of the whole input. Joined, the outputs equal ``PiiRedactor.redact`` of the joined
    input, and no output ever carries any part of a span."""

    def __init__(self, recognisers: tuple[Recogniser, ...]) -> None:
        self._recognisers = recognisers
        self._buf = ""  # up to CONTEXT characters already emitted (for look-behind), then pending
        self._pos = 0  # where the pending text starts in _buf
        self._base = 0  # offset of _buf[0] in the whole input
        self._done = False
        self.spans: list[Span] = []

    @property
    def pending(self) -> int:
        """Characters fed but not yet emitted."""
        return len(self._buf) - self._pos

    def feed(self, delta: str) -> str:
        if self._done:
            raise RuntimeError("StreamRedactor.feed() after flush()")
        self._buf += delta
        return self._emit(final=False)

    def flush(self) -> str:
        out = self._emit(final=True) if not self._done else ""
        self._done = True
        return out

    def _emit(self, final: bool) -> str:
        buf, pos = self._buf, self._pos
        if pos == len(buf):
            return ""
        cut, spans = _scan(self._recognisers, buf, pos, final)
        if cut == pos:
            return ""
        out = _render(buf, pos, cut, spans)
        self.spans.extend(Span(s.type, s.start + self._base, s.end + self._base) for s in spans)
        keep = max(0, cut - CONTEXT)
        self._buf, self._pos, self._base = buf[keep:], cut - keep, self._base + keep
        return out
