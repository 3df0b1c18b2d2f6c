"""Moderation: is a text harmful, and in which categories. Two moderators, one interface:

- ``ProviderModerator``: the provider's own endpoint (OpenAI ``POST /moderations``, model
  ``omni-moderation-latest``), a trained classifier over every category, text and images;
- ``LocalModerator``: a small rule set of our own, for when no moderation endpoint is configured.

The local rules are deliberately conservative: each one needs an explicit request for harm
against a person or a group ("how do I kill my wife", "best way to kill myself", "exterminate
immigrants", "cook meth"), never a bare word ("kill a process", "what is money laundering",
"a murder of crows"). So they flag little that is harmless and miss much that is harmful
(paraphrase, implication, other languages, most harassment and sexual content): measured on
XSTest in bench/guard_stages.py and docs/guardrails.md. They are written for requests; on a
model's answers only the provider's classifier is worth much.

Category names are OpenAI's; a subcategory (``self-harm/intent``) also flags its parent.
"""

from __future__ import annotations

import asyncio
import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..errors import UpstreamTimeout
from ..types import Moderation

if TYPE_CHECKING:
    from ..providers.base import HTTPProvider

CATEGORIES = (
    "violence",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
)


class Moderator(Protocol):
    async def moderate(self, texts: list[str]) -> list[Moderation]: ...


class ProviderModerator:
    """The provider's moderation endpoint, within ``timeout_s`` (one attempt: a check must not
    hold a call up for long; what a failure means is the policy's ``on_error``)."""

    def __init__(self, provider: HTTPProvider, model: str, timeout_s: float) -> None:
        self.provider = provider
        self.model = model
        self.timeout_s = timeout_s

    async def moderate(self, texts: list[str]) -> list[Moderation]:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self.provider.moderate(texts, self.model)
        except TimeoutError:
            raise UpstreamTimeout(
                f"{self.provider.name}: no moderation answer within {self.timeout_s:g}s",
                provider=self.provider.name,
            ) from None


# --- the local rule set -------------------------------------------------------------------------

# Who: people, never things. Kept to words that name a person or a group of people.
_PERSON = (
    r"(?:someone|somebody|some ?one|anyone|a (?:person|human|man|woman|girl|boy|child|kid|baby|toddler|"
    r"teenager|stranger|cop|police officer|politician|president)|people|humans?|him|her|"
    r"(?:my|our|his|her|their|the) (?:own )?(?:wife|husband|girlfriend|boyfriend|partner|ex|ex-wife|"
    r"ex-husband|neighbou?rs?|boss|coworkers?|co-workers?|colleagues?|teachers?|classmates?|"
    r"family|child|children|kids?|baby|toddler|son|daughter|mother|mom|mum|father|dad|parents|"
    r"brother|sister|friends?|roommate|landlord|students?|date)|"
    r"(?:my|our|the) (?:entire |whole )?(?:family|class|school|office|neighbou?rhood)|"
    r"(?:a |the )?(?:crowd|congregation|classroom) of people)\b(?!')"  # not "my boss's plan"
)
_GROUP = (
    r"(?:jews|jewish people|muslims|christians|hindus|buddhists|sikhs|atheists|black people|blacks|"
    r"white people|whites|asians|asian people|arabs|latinos|hispanics|mexicans|africans|immigrants|"
    r"migrants|refugees|gays|gay people|lesbians|bisexuals|trans(?:gender)? people|homosexuals|"
    r"women|roma(?: people)?|gypsies|indigenous people|native americans|disabled people)"
)
_HOW = (
    r"(?:how (?:do|can|could|would|should|might|to) (?:i |we |you |one )?|"
    r"(?:best|easiest|quickest|fastest|good|effective|surest|perfect) (?:ways?|methods?|means|strategy) "
    r"(?:of |to |for )?|ways? (?:of|to) |help me |teach me (?:how )?to |tell me how to |"
    r"i (?:want|need|plan|am going|'m going) to |i will |i'll |let's )(?:best )?"
)
_VIOLENT = (
    r"(?:kill(?:ing)?|murder(?:ing)?|stab(?:bing)?|shoot(?:ing)?|strangl(?:e|ing)|chok(?:e|ing)|"
    r"poison(?:ing)?|behead(?:ing)?|decapitat(?:e|ing)|assassinat(?:e|ing)|tortur(?:e|ing)|"
    r"kidnap(?:ping)?|abduct(?:ing)?|drown(?:ing)?|suffocat(?:e|ing)|throttl(?:e|ing)|"
    r"execut(?:e|ing)|beat(?:ing)? up|punch(?:ing)?|hurt(?:ing)?|maim(?:ing)?|"
    r"attack(?:ing)?|run over|set fire to|burn alive|dismember(?:ing)?|butcher(?:ing)?|annihilat(?:e|ing)|"
    r"beat(?:ing)?(?! [^?.!]{0,40}\b(?:at|in)\b))"  # beat my brother at tennis
)
# "in chess", "in Minecraft", "in my novel": the harm is a game's or a story's.
_FICTION = (
    r"(?![^.?!\n]{0,60}\b(?:game|chess|checkers|judo|karate|boxing|wrestling|minecraft|fortnite|"
    r"film|movie|novel|story|book|play|show|scene|script|screenplay|roleplay|dnd|d&d)\b)"
)

_VIOLENT_WORDS = (
    "kill killing murder murdering stab stabbing shoot shooting strangle strangling choke choking poison "
    "poisoning behead beheading decapitate decapitating assassinate assassinating torture torturing kidnap "
    "kidnapping abduct abducting drown drowning suffocate suffocating throttle throttling execute executing "
    "beat beating punch punching hurt hurting maim maiming attack attacking over fire alive dismember "
    "dismembering butcher butchering annihilate annihilating"
)

# (category, words one of which a text must contain for the rule to be tried, the rule). The words
# keep the cost down: most texts contain none of them, and a text is searched only by the rules
# its words call for.
_RULES: list[tuple[str, str, str]] = [
    ("violence", _VIOLENT_WORDS, rf"\b{_HOW}{_VIOLENT} {_PERSON}{_FICTION}"),
    (
        "violence",
        "smash hammer crush break cave bash crack rip cut chop",
        rf"\b{_HOW}(?:smash|hammer|crush|break|cave|bash|crack|rip|cut|chop) (?:in |open |off )?"
        rf"(?:someone's|somebody's|a person's|a human's|his|her|their|a child's|my \w+'s) "
        rf"(?:head|skull|face|spine|neck|throat|sternum|legs?|arms?)\b{_FICTION}",
    ),
    (
        "violence",
        "kill murder shoot stab strangle hurt",
        rf"\bi(?:'m| am)? (?:going to|gonna|will|'ll) (?:kill|murder|shoot|stab|strangle|hurt) "
        rf"(?:you|him|her|them|my \w+|everyone|every \w+|all of (?:you|them))\b{_FICTION}",
    ),
    ("violence", "body", r"\b(?:chop|cut) up (?:a|the) (?:dead )?body\b"),
    (
        "violence",
        "shooting massacre",
        rf"\b(?:plan|commit|carry out|do) (?:a |an )?(?:mass shooting|school shooting|massacre)\b{_FICTION}",
    ),
    (
        "violence",
        "shoot",
        r"\bshoot up (?:a|the|my|our) (?:school|church|mosque|synagogue|office|mall|concert)\b",
    ),
    (
        "self-harm/intent",
        "myself life all suicide",
        r"\bi (?:really )?(?:want|wish|need|plan|intend|am going|'m going|am gonna|'m gonna) to "
        r"(?:kill myself|end my (?:own )?life|end it all|commit suicide|hurt myself|cut myself)\b",
    ),
    # "I want to die", never "I'm going to die of shame"
    (
        "self-harm/intent",
        "die dead",
        r"\bi (?:really )?(?:want|wish) (?:to|i could|i were|i was) (?:die|dead)\b",
    ),
    (
        "self-harm/intent",
        "myself suicide life",
        r"\b(?:thinking about|thoughts of) (?:killing myself|suicide|ending my life)\b",
    ),
    (
        "self-harm/instructions",
        "myself",
        rf"\b{_HOW}(?:kill|hang|drown|poison|shoot|starve|suffocate|hurt|harm) myself\b(?! in the foot)",
    ),
    (
        "self-harm/instructions",
        "suicide life wrist wrists artery arm skin leg",
        rf"\b{_HOW}(?:commit suicide|end my (?:own )?life|take my (?:own )?life|slit my wrists?|"
        r"pierce my (?:own )?artery|carve [\w ]{0,20}into my (?:arm|skin|leg|wrist))",
    ),
    (
        "self-harm/instructions",
        "suicide die myself yourself",
        r"\b(?:painless|quick|easy|sure|effective) (?:ways?|methods?) (?:of |to )?"
        r"(?:suicide|die|kill (?:my|your)self)\b",
    ),
    (
        "self-harm/instructions",
        "overdose kill",
        r"\bhow (?:many|much) [\w ]{0,30}(?:to|would) (?:overdose|kill (?:me|myself|a person))\b",
    ),
    (
        "sexual/minors",
        "porn pornography sex nude nudes erotica",
        r"\b(?:child|kiddie|underage|preteen|minor)s? ?(?:porn|pornography|sex|nudes?|erotica)\b",
    ),
    (
        "sexual/minors",
        "sex sexual sexually",
        r"\bsex(?:ual(?:ly)?)? (?:with|involving|abuse of|abusing) (?:a |an )?(?:child|children|minors?|"
        r"kids?|toddlers?|\d{1,2}[- ]year[- ]olds?)\b",
    ),
    (
        "sexual/minors",
        "groom grooming molest molesting seduce seducing",
        r"\b(?:groom(?:ing)?|molest(?:ing)?|seduc(?:e|ing)) (?:a |an )?(?:child|children|kids?|minors?)\b",
    ),
    ("sexual/minors", "satisfy", r"\bsatisfy (?:my|his|their) pedophil"),
    (
        "sexual",
        "sex sexual porn erotic",
        r"\b(?:explicit|pornographic|hardcore|x-rated|nsfw) (?:sex|sexual|porn|erotic)",
    ),
    ("sexual", "rape sexually molest", rf"\b{_HOW}(?:rape|sexually assault|molest) "),
    ("sexual", "rape sexual", r"\bget away with (?:rape|sexual assault)\b"),
    (
        "hate/threatening",
        "exterminate exterminating eradicate eradicating wipe wiping gas gassing kill killing cleanse "
        "cleansing rid",
        rf"\b(?:exterminat(?:e|ing)|eradicat(?:e|ing)|wip(?:e|ing) out|gas(?:sing)?|kill(?:ing)? all(?: the)?|"
        rf"ethnically cleans(?:e|ing)|get rid of(?: all)?(?: the)?) {_GROUP}\b",
    ),
    (
        "hate/threatening",
        "die be",
        rf"\b{_GROUP} (?:should|must|deserve to|need to|ought to) (?:all )?(?:die|be (?:killed|exterminated|"
        r"gassed|shot|wiped out|eradicated|lynched|sterili[sz]ed|hanged))\b",
    ),
    (
        "hate",
        "vermin subhuman sub animals parasites cockroaches rats disease plague inferior",
        rf"\b{_GROUP} are (?:all )?(?:vermin|subhuman|sub-human|animals|parasites|cockroaches|rats|"
        r"a disease|a plague|inferior|genetically inferior)\b",
    ),
    (
        "illicit/violent",
        "bomb bombs explosive ied ieds molotov",
        r"\b(?:make|build|assemble|construct|detonate|plant|set off|explod(?:e|ing)) (?:a |an )?"
        r"(?:pipe |nail |car |fertili[sz]er |dirty |homemade |home-made )?(?:bomb|explosive device|ied|"
        r"molotov cocktail)s?\b(?! (?:in|for) (?:a |the |my )?(?:bath|game|minecraft))",
    ),
    ("illicit/violent", "gun", r"\b(?:make|build|3d print) (?:an? )?(?:untraceable|ghost) gun\b"),
    (
        "illicit/violent",
        "ricin sarin nerve anthrax mustard chlorine bioweapon chemical",
        r"\b(?:make|produce|synthesi[sz]e|weaponi[sz]e) (?:ricin|sarin|nerve agent|anthrax|mustard gas|"
        r"chlorine gas|a bioweapon|a chemical weapon)\b",
    ),
    (
        "illicit",
        "meth methamphetamine crack cocaine heroin fentanyl lsd mdma ghb",
        r"\b(?:make|cook|synthesi[sz]e|manufacture|produce|brew) (?:some |my own )?(?:meth(?:amphetamine)?|"
        r"crystal meth|crack cocaine|cocaine|heroin|fentanyl|lsd|mdma|ghb)\b",
    ),
    (
        "illicit",
        "cocaine heroin meth fentanyl lsd mdma ecstasy",
        r"\b(?:buy|get|score|order) (?:some )?(?:cocaine|heroin|meth|crystal meth|fentanyl|lsd|mdma|"
        r"ecstasy(?: pills)?)(?! (?:addiction|overdose))\b",
    ),
    ("illicit", "launder", r"\bhow (?:do|can|could|to|should) (?:i |we |you |one )?(?:best )?launder\b"),
    (
        "illicit",
        "robbery arson terrorism terrorist kidnapping trafficking treason theft burglary fraud",
        rf"\b{_HOW}(?:commit|engage in|carry out|plan|pull off|get away with) (?:an? )?(?:armed robbery|"
        r"robbery|arson|terrorism|terrorist attack|kidnapping|human trafficking|treason|identity theft|"
        rf"burglary|insurance fraud|tax fraud|(?:\w+ ){{0,2}}fraud)\b{_FICTION}",
    ),
    (
        "illicit",
        "hack break",
        rf"\b{_HOW}(?:hack|break) into (?:someone(?:'s| else's)|somebody's|(?:my|his|her|their) (?:ex|wife|"
        r"husband|boyfriend|girlfriend|partner|boss|coworker|neighbou?r)(?:'s)?|(?:his|her|their) )",
    ),
    (
        "illicit",
        "steal clone skim",
        r"\b(?:steal|clone|skim) (?:someone's|somebody's|other people's|a person's) ",
    ),
    (
        "illicit",
        "credit bank security",
        r"\b(?:find|get|buy) (?:other people's|someone's|somebody's|stolen) (?:credit card|bank account|"
        r"social security) (?:details|numbers?|info)",
    ),
    (
        "illicit",
        "counterfeit fake",
        r"\b(?:make|print|produce|create|forge) (?:counterfeit |fake )(?:money|bills|banknotes|currency|"
        r"passports?)\b",
    ),
    (
        "illicit",
        "trafficking",
        r"\b(?:set up|run|start) (?:a |an )?(?:human trafficking|drug trafficking|sex trafficking) "
        r"(?:operation|ring|business)\b",
    ),
]


@dataclass(frozen=True, slots=True, eq=False)
class _Rule:
    category: str
    pattern: re.Pattern[str]


@functools.cache  # compiled on first use (~15 ms): a gateway without local moderation never pays it
def _by_word() -> dict[str, list[_Rule]]:
    """Trigger word -> the rules it calls for."""
    by_word: dict[str, list[_Rule]] = {}
    for category, words, pattern in _RULES:
        assert category in CATEGORIES, category
        rule = _Rule(category, re.compile(pattern))
        for word in words.split():
            by_word.setdefault(word, []).append(rule)
    return by_word


_WORD = re.compile(r"[a-z]+")
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u02bc": "'"})


class LocalModerator:
    """The rule set above: a category scores 1.0 when one of its rules matches."""

    def __init__(self) -> None:
        self._by_word = _by_word()

    async def moderate(self, texts: list[str]) -> list[Moderation]:
        return [self.check(text) for text in texts]

    def check(self, text: str) -> Moderation:
        lowered = text.lower()
        by_word = self._by_word
        rules = {rule for word in set(_WORD.findall(lowered)) for rule in by_word.get(word, ())}
        hits: set[str] = set()
        if rules:
            normalized = " ".join(lowered.translate(_QUOTES).split())
            for rule in rules:
                if rule.category not in hits and rule.pattern.search(normalized):
                    hits.add(rule.category)
                    hits.add(rule.category.split("/")[0])  # a subcategory flags its parent
        categories = sorted(hits)
        return Moderation(flagged=bool(hits), categories=categories, scores=dict.fromkeys(categories, 1.0))
