"""A small synthetic English grammar rendered into French and Korean, with gold word alignments.

Every English sentence has the shape::

    SUBJECT [do|does not] VERB OBJECT [in PLACE] [TIME]
    OBJECT = DET [ADJ] NOUN            (singular or plural)
    PLACE  = DET NOUN                  (singular)

French keeps the order (adjectives such as *rouge* follow the noun, *grand* precedes it) and
applies agreement and elision: ``je``/``ne``/``le``/``la`` fuse with a following vowel into one
whitespace word (``j'aime``, ``n'aime``, ``l'hôtel``), ``ce`` → ``cet``, ``ma`` → ``mon``,
``nouveau`` → ``nouvel`` before a vowel. Korean is SOV with particles: topic ``은/는`` on the
subject, object ``을/를`` chosen by the final consonant (batchim) of the noun's last syllable,
``에서`` on the place, and the short negation ``안`` before the verb (``안 본다``).

Gold alignments are Pharaoh-style pairs ``(i, j)``: ``i`` indexes the English whitespace word,
``j`` the target whitespace word, both 0-based. A fused target word is aligned to every English
word it came from (``j'aime`` ← ``I``, ``like``). These are *sure* links. The auxiliary
``do``/``does`` of a negation has no word of its own in French or Korean (its tense and person live
on the verb): it gets *possible* links (Och & Ney's P, as gold annotators mark a function word
that has no counterpart) to the target's verb group — ``ne``, the verb and ``pas``; ``안`` and the
verb — and no sure link, so AER neither requires nor punishes them. :func:`pieces` says how the translators'
tokenizer writes each word: a fused word as two pieces, split where its two English words' parts
meet (``j'`` + ``aime``, ``도시`` + ``에서``).

Generation is pure Python, seeded with :class:`random.Random`, and needs no third-party package.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

LANGS = ("fr", "ko")

# -- lexicon ----------------------------------------------------------------------------------
# subject → (English, French, Korean stem, French person 0..5 = je tu il nous vous ils)
SUBJECTS: dict[str, tuple[str, str, str, int]] = {
    "I": ("I", "je", "나", 0),
    "you": ("you", "tu", "너", 1),
    "he": ("he", "il", "그", 2),
    "she": ("she", "elle", "그녀", 2),
    "we": ("we", "nous", "우리", 3),
    "you all": ("you all", "vous", "너희", 4),
    "they": ("they", "ils", "그들", 5),
}

# verb → (English base, English 3rd singular, French by person, Korean plain form)
VERBS: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "like": (
        "like",
        "likes",
        ("aime", "aimes", "aime", "aimons", "aimez", "aiment"),
        "좋아한다",
    ),
    "watch": (
        "watch",
        "watches",
        ("regarde", "regardes", "regarde", "regardons", "regardez", "regardent"),
        "본다",
    ),
    "love": (
        "love",
        "loves",
        ("adore", "adores", "adore", "adorons", "adorez", "adorent"),
        "사랑한다",
    ),
    "see": ("see", "sees", ("vois", "vois", "voit", "voyons", "voyez", "voient"), "본다"),
    "buy": (
        "buy",
        "buys",
        ("achète", "achètes", "achète", "achetons", "achetez", "achètent"),
        "산다",
    ),
    "want": (
        "want",
        "wants",
        ("veux", "veux", "veut", "voulons", "voulez", "veulent"),
        "원한다",
    ),
    "find": (
        "find",
        "finds",
        ("trouve", "trouves", "trouve", "trouvons", "trouvez", "trouvent"),
        "찾는다",
    ),
}

# determiner → (English singular, English plural, French (masc sg, fem sg, plural), Korean)
DETERMINERS: dict[str, tuple[str, str, tuple[str, str, str], str]] = {
    "this": ("this", "these", ("ce", "cette", "ces"), "이"),
    "the": ("the", "the", ("le", "la", "les"), "그"),
    "my": ("my", "my", ("mon", "ma", "mes"), "내"),
    "your": ("your", "your", ("ton", "ta", "tes"), "너의"),
    "his": ("his", "his", ("son", "sa", "ses"), "그의"),
    "her": ("her", "her", ("son", "sa", "ses"), "그녀의"),
}
PLACE_DETERMINERS = ("the", "this", "my", "your")

# adjective → (French (m sg, f sg, m pl, f pl, m sg before a vowel), before the noun?, Korean)
ADJECTIVES: dict[str, tuple[tuple[str, str, str, str, str], bool, str]] = {
    "big": (("grand", "grande", "grands", "grandes", "grand"), True, "큰"),
    "small": (("petit", "petite", "petits", "petites", "petit"), True, "작은"),
    "new": (("nouveau", "nouvelle", "nouveaux", "nouvelles", "nouvel"), True, "새"),
    "old": (("vieux", "vieille", "vieux", "vieilles", "vieil"), True, "오래된"),
    "beautiful": (("beau", "belle", "beaux", "belles", "bel"), True, "아름다운"),
    "red": (("rouge", "rouge", "rouges", "rouges", "rouge"), False, "빨간"),
    "black": (("noir", "noire", "noirs", "noires", "noir"), False, "검은"),
    "green": (("vert", "verte", "verts", "vertes", "vert"), False, "초록색"),
}

# noun → (English plural, French singular, French plural, gender "m"/"f", Korean)
NOUNS: dict[str, tuple[str, str, str, str, str]] = {
    "course": ("courses", "cours", "cours", "m", "강의"),
    "book": ("books", "livre", "livres", "m", "책"),
    "table": ("tables", "table", "tables", "f", "탁자"),
    "car": ("cars", "voiture", "voitures", "f", "차"),
    "film": ("films", "film", "films", "m", "영화"),
    "song": ("songs", "chanson", "chansons", "f", "노래"),
    "dog": ("dogs", "chien", "chiens", "m", "개"),
    "cat": ("cats", "chat", "chats", "m", "고양이"),
    "apple": ("apples", "pomme", "pommes", "f", "사과"),
    "computer": ("computers", "ordinateur", "ordinateurs", "m", "컴퓨터"),
    "bike": ("bikes", "vélo", "vélos", "m", "자전거"),
    "photo": ("photos", "photo", "photos", "f", "사진"),
    "flower": ("flowers", "fleur", "fleurs", "f", "꽃"),
    "window": ("windows", "fenêtre", "fenêtres", "f", "창문"),
    "hotel": ("hotels", "hôtel", "hôtels", "m", "호텔"),
    "orange": ("oranges", "orange", "oranges", "f", "오렌지"),
    "phone": ("phones", "téléphone", "téléphones", "m", "전화기"),
    "boat": ("boats", "bateau", "bateaux", "m", "배"),
    "student": ("students", "étudiant", "étudiants", "m", "학생"),
    "letter": ("letters", "lettre", "lettres", "f", "편지"),
}

# place → (French, gender, Korean)
PLACES: dict[str, tuple[str, str, str]] = {
    "city": ("ville", "f", "도시"),
    "park": ("parc", "m", "공원"),
    "school": ("école", "f", "학교"),
    "garden": ("jardin", "m", "정원"),
    "house": ("maison", "f", "집"),
    "office": ("bureau", "m", "사무실"),
    "market": ("marché", "m", "시장"),
}

# time → (English words, French words, Korean words, French links, Korean links); a link lists
# the English word offsets (within the time phrase) each target word is aligned to.
TIMES: dict[
    str,
    tuple[
        tuple[str, ...],
        tuple[str, ...],
        tuple[str, ...],
        tuple[tuple[int, ...], ...],
        tuple[tuple[int, ...], ...],
    ],
] = {
    "today": (("today",), ("aujourd'hui",), ("오늘",), ((0,),), ((0,),)),
    "now": (("now",), ("maintenant",), ("지금",), ((0,),), ((0,),)),
    "every day": (("every", "day"), ("chaque", "jour"), ("매일",), ((0,), (1,)), ((0, 1),)),
    # "every" also occurs with other nouns, so `chaque` is linked to `every` by the data itself
    # (with "every day" alone, `day` predicts `chaque` as well as `every` does)
    "every week": (("every", "week"), ("chaque", "semaine"), ("매주",), ((0,), (1,)), ((0, 1),)),
    "every morning": (
        ("every", "morning"),
        ("chaque", "matin"),
        ("아침마다",),
        ((0,), (1,)),
        ((0, 1),),
    ),
}

# Korean words that join the translations of two English words, and their two pieces: the
# place and 에서 (in), 매 (every) and the time noun, 아침 (morning) and 마다 (every)
KOREAN_PIECES: dict[str, tuple[str, str]] = {
    **{ko + "에서": (ko, "에서") for _, _, ko in PLACES.values()},
    "매일": ("매", "일"),
    "매주": ("매", "주"),
    "아침마다": ("아침", "마다"),
}

# French words starting with one of these fuse/elide; "h" only occurs in h-muet words (hôtel)
_VOWELS = frozenset("aeiouyàâéèêîôûh")
# French words that fuse with a following vowel-initial word: je aime → j'aime
_ELIDE = {"je": "j'", "ne": "n'", "le": "l'", "la": "l'"}
# possessive/demonstrative forms that change (without fusing) before a vowel
_BEFORE_VOWEL = {"ce": "cet", "ma": "mon", "ta": "ton", "sa": "son"}


@dataclass(frozen=True, order=True)
class Meaning:
    """One abstract sentence; :func:`render` turns it into an English/target pair."""

    subject: str
    verb: str
    negated: bool
    determiner: str
    adjective: str | None
    noun: str
    plural: bool
    place: tuple[str, str] | None  # (determiner, place)
    time: str | None


@dataclass(frozen=True)
class Pair:
    """An English sentence, its translation and the gold word alignment.

    Attributes
    ----------
    src, tgt : whitespace-separated sentences (English with a capital ``I``)
    alignment : sorted sure ``(i_src_word, j_tgt_word)`` links, 0-based
    possible : sorted possible-only links (none of them in ``alignment``): ``do``/``does`` to the
        target's verb group
    """

    src: str
    tgt: str
    alignment: tuple[tuple[int, int], ...]
    possible: tuple[tuple[int, int], ...] = ()

    def pharaoh(self) -> str:
        """The gold as ``"i-j ipj …"`` (``i-j`` sure, ``ipj`` possible) sorted by source then
        target index."""
        links = [(i, j, "-") for i, j in self.alignment] + [(i, j, "p") for i, j in self.possible]
        return " ".join(f"{i}{sep}{j}" for i, j, sep in sorted(links))


# -- rendering --------------------------------------------------------------------------------
def _starts_with_vowel(word: str) -> bool:
    return bool(word) and word[0] in _VOWELS


def _has_batchim(word: str) -> bool:
    """True when the last Hangul syllable of ``word`` ends in a consonant (책 yes, 강의 no)."""
    code = ord(word[-1]) - 0xAC00
    if not 0 <= code < 11172:
        raise ValueError(f"{word!r} does not end in a Hangul syllable")
    return code % 28 != 0


def _topic(stem: str) -> str:
    return stem + ("은" if _has_batchim(stem) else "는")


def _object(noun: str) -> str:
    return noun + ("을" if _has_batchim(noun) else "를")


class _English:
    """Accumulates English words and remembers which indices each role got."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self.roles: dict[str, tuple[int, ...]] = {}

    def put(self, role: str, *words: str) -> None:
        start = len(self.words)
        self.words.extend(words)
        self.roles[role] = tuple(range(start, len(self.words)))

    def __getitem__(self, role: str) -> tuple[int, ...]:
        return self.roles.get(role, ())


def _english(m: Meaning) -> _English:
    en = _English()
    en_subj, _, _, person = SUBJECTS[m.subject]
    base, third, *_ = VERBS[m.verb]
    en.put("subj", *en_subj.split())
    if m.negated:
        en.put("aux", "does" if person == 2 else "do")
        en.put("not", "not")
        en.put("verb", base)
    else:
        en.put("verb", third if person == 2 else base)
    det_sg, det_pl, _, _ = DETERMINERS[m.determiner]
    en.put("det", det_pl if m.plural else det_sg)
    if m.adjective is not None:
        en.put("adj", m.adjective)
    en.put("noun", NOUNS[m.noun][0] if m.plural else m.noun)
    if m.place is not None:
        pdet, place = m.place
        en.put("in", "in")
        en.put("pdet", DETERMINERS[pdet][0])
        en.put("pnoun", place)
    if m.time is not None:
        en.put("time", *TIMES[m.time][0])
    return en


Target = list[tuple[str, tuple[int, ...]]]  # (word, English word indices it is aligned to)


def _french_np(
    det: str, adj: str | None, noun_fr: str, gender: str, plural: bool, en: _English, prefix: str
) -> Target:
    """Determiner, adjective and noun with agreement; ``prefix`` is "" (object) or "p" (place)."""
    masc = gender == "m"
    noun_links = en[prefix + "noun"] if prefix else en["noun"]
    out: Target = []
    pre: tuple[str, tuple[int, ...]] | None = None
    post: tuple[str, tuple[int, ...]] | None = None
    if adj is not None:
        forms, before, _ = ADJECTIVES[adj]
        if plural:
            form = forms[2] if masc else forms[3]
        elif masc:
            form = forms[4] if (before and _starts_with_vowel(noun_fr)) else forms[0]
        else:
            form = forms[1]
        if before:
            pre = (form, en["adj"])
        else:
            post = (form, en["adj"])
    det_forms = DETERMINERS[det][2]
    det_fr = det_forms[2] if plural else det_forms[0 if masc else 1]
    following = pre[0] if pre is not None else noun_fr
    if _starts_with_vowel(following):
        det_fr = _BEFORE_VOWEL.get(det_fr, det_fr)
    out.append((det_fr, en[prefix + "det"]))
    if pre is not None:
        out.append(pre)
    out.append((noun_fr, noun_links))
    if post is not None:
        out.append(post)
    return out


def _elide(words: Target) -> Target:
    """Fuse ``je``/``ne``/``le``/``la`` with a following vowel-initial word (links are joined)."""
    out: Target = []
    i = 0
    while i < len(words):
        word, links = words[i]
        if word in _ELIDE and i + 1 < len(words) and _starts_with_vowel(words[i + 1][0]):
            nxt, nlinks = words[i + 1]
            out.append((_ELIDE[word] + nxt, tuple(sorted(set(links) | set(nlinks)))))
            i += 2
            continue
        out.append((word, links))
        i += 1
    return out


def pieces(word: str) -> tuple[str, ...]:
    """The pieces the toy translators' tokenizer writes a word as.

    A target word that joins the translations of two English words is two pieces, split where
    they meet: a French elision after its apostrophe (``j'`` + ``aime``, ``l'`` + ``hôtel``) and
    the Korean words of :data:`KOREAN_PIECES` (``도시`` + ``에서``, ``매`` + ``일``). Every other
    word (English, ``aujourd'hui``, ``vous``, ``너희는``) is one piece.
    """
    if word in KOREAN_PIECES:
        return KOREAN_PIECES[word]
    for head in set(_ELIDE.values()):
        if word.startswith(head) and len(word) > len(head):
            return head, word[len(head):]
    return (word,)


def _french(m: Meaning, en: _English) -> Target:
    _, fr_subj, _, person = SUBJECTS[m.subject]
    verb_fr = VERBS[m.verb][2][person]
    words: Target = [(fr_subj, en["subj"])]
    if m.negated:
        words += [("ne", en["not"]), (verb_fr, en["verb"]), ("pas", en["not"])]
    else:
        words.append((verb_fr, en["verb"]))
    noun = NOUNS[m.noun]
    words += _french_np(
        m.determiner, m.adjective, noun[2] if m.plural else noun[1], noun[3], m.plural, en, ""
    )
    if m.place is not None:
        pdet, place = m.place
        fr_place, gender, _ = PLACES[place]
        words.append(("dans", en["in"]))
        words += _french_np(pdet, None, fr_place, gender, False, en, "p")
    if m.time is not None:
        _, fr_words, _, fr_links, _ = TIMES[m.time]
        t0 = en["time"]
        words += [(w, tuple(t0[k] for k in ks)) for w, ks in zip(fr_words, fr_links, strict=True)]
    return _elide(words)


def _korean(m: Meaning, en: _English) -> Target:
    _, _, ko_stem, _ = SUBJECTS[m.subject]
    words: Target = [(_topic(ko_stem), en["subj"])]
    if m.time is not None:
        _, _, ko_words, _, ko_links = TIMES[m.time]
        t0 = en["time"]
        words += [(w, tuple(t0[k] for k in ks)) for w, ks in zip(ko_words, ko_links, strict=True)]
    if m.place is not None:
        pdet, place = m.place
        words.append((DETERMINERS[pdet][3], en["pdet"]))
        words.append((PLACES[place][2] + "에서", tuple(sorted(en["in"] + en["pnoun"]))))
    words.append((DETERMINERS[m.determiner][3], en["det"]))
    if m.adjective is not None:
        words.append((ADJECTIVES[m.adjective][2], en["adj"]))
    noun_ko = NOUNS[m.noun][4] + ("들" if m.plural else "")
    words.append((_object(noun_ko), en["noun"]))
    if m.negated:
        words.append(("안", en["not"]))
    words.append((VERBS[m.verb][3], en["verb"]))
    return words


def render(meaning: Meaning, lang: str) -> Pair:
    """English sentence, its ``lang`` translation and the gold alignment of one meaning.

    Parameters
    ----------
    meaning : the abstract sentence
    lang : ``"fr"`` or ``"ko"``

    Returns
    -------
    Pair
    """
    en = _english(meaning)
    if lang == "fr":
        target = _french(meaning, en)
    elif lang == "ko":
        target = _korean(meaning, en)
    else:
        raise ValueError(f"unknown target language {lang!r}; choose one of {', '.join(LANGS)}")
    links = sorted({(i, j) for j, (_, src) in enumerate(target) for i in src})
    # the auxiliary of a negation: possible links to every target word of "not" or the verb
    verb_group = set(en["not"]) | set(en["verb"])
    possible = sorted({(a, j) for a in en["aux"] for j, (_, src) in enumerate(target) if verb_group & set(src)})
    return Pair(" ".join(en.words), " ".join(w for w, _ in target), tuple(links), tuple(possible))


# -- sampling ---------------------------------------------------------------------------------
def _sample_meaning(rng: random.Random) -> Meaning:
    place = None
    if rng.random() < 0.3:
        place = (rng.choice(PLACE_DETERMINERS), rng.choice(sorted(PLACES)))
    return Meaning(
        subject=rng.choice(list(SUBJECTS)),
        verb=rng.choice(list(VERBS)),
        negated=rng.random() < 0.25,
        determiner=rng.choice(list(DETERMINERS)),
        adjective=rng.choice(list(ADJECTIVES)) if rng.random() < 0.45 else None,
        noun=rng.choice(list(NOUNS)),
        plural=rng.random() < 0.3,
        place=place,
        time=rng.choice(list(TIMES)) if rng.random() < 0.25 else None,
    )


def generate_meanings(n: int, seed: int = 0) -> list[Meaning]:
    """``n`` distinct meanings (hence ``n`` distinct English sentences), in a seeded order."""
    rng = random.Random(seed)
    seen: set[Meaning] = set()
    out: list[Meaning] = []
    while len(out) < n:
        m = _sample_meaning(rng)
        if m not in seen:
            seen.add(m)
            out.append(m)
    return out


def sample_pairs(lang: str, n: int, seed: int = 0) -> list[Pair]:
    """``n`` distinct sentence pairs for ``lang``; the same seed gives the same English side."""
    return [render(m, lang) for m in generate_meanings(n, seed)]


def split_pairs(
    pairs: Sequence[Pair], heldout_fraction: float = 0.1, seed: int = 0
) -> tuple[list[Pair], list[Pair]]:
    """Seeded shuffle, then ``(train, heldout)`` with ``ceil(fraction · n)`` held-out pairs."""
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError("heldout_fraction must be between 0 and 1")
    order = list(range(len(pairs)))
    random.Random(seed + 1).shuffle(order)
    n_held = math.ceil(heldout_fraction * len(pairs))
    held = [pairs[i] for i in order[:n_held]]
    train = [pairs[i] for i in order[n_held:]]
    return train, held


def covering_meanings() -> list[Meaning]:
    """Meanings that together produce every word form the grammar can produce.

    Word forms depend only on local choices (subject × verb × negation, determiner × adjective ×
    noun × number, place determiner × place, time), so covering each factor combination once
    covers the whole vocabulary without enumerating every sentence.
    """
    base = Meaning("I", "like", False, "the", None, "book", False, None, None)
    out: list[Meaning] = []
    for s in SUBJECTS:
        for v in VERBS:
            for neg in (False, True):
                out.append(_replace(base, subject=s, verb=v, negated=neg))
    for d in DETERMINERS:
        for a in (None, *ADJECTIVES):
            for noun in NOUNS:
                for pl in (False, True):
                    out.append(_replace(base, determiner=d, adjective=a, noun=noun, plural=pl))
    for pd in PLACE_DETERMINERS:
        for p in PLACES:
            out.append(_replace(base, place=(pd, p)))
    for t in TIMES:
        out.append(_replace(base, time=t))
    return out


def _replace(m: Meaning, **kw: object) -> Meaning:
    from dataclasses import replace

    return replace(m, **kw)  # type: ignore[arg-type]


#: word classes of English words, in the order used to name a target word aligned to several
WORD_CLASSES = (
    "verb",
    "noun",
    "place",
    "adjective",
    "determiner",
    "negation",
    "time",
    "subject",
    "preposition",
)


def _english_classes() -> dict[str, str]:
    classes: dict[str, str] = {}
    for s in SUBJECTS.values():
        for w in s[0].split():
            classes[w.lower()] = "subject"
    for v in VERBS.values():
        classes[v[0]] = classes[v[1]] = "verb"
    for d in DETERMINERS.values():
        classes[d[0]] = classes[d[1]] = "determiner"
    for a in ADJECTIVES:
        classes[a] = "adjective"
    for n, forms in NOUNS.items():
        classes[n] = classes[forms[0]] = "noun"
    for p in PLACES:
        classes[p] = "place"
    for t in TIMES.values():
        for w in t[0]:
            classes[w] = "time"
    classes.update({"do": "negation", "does": "negation", "not": "negation", "in": "preposition"})
    return classes


_CLASS_OF = _english_classes()


def word_class(english_word: str) -> str:
    """The grammar's class of an English word: one of :data:`WORD_CLASSES`.

    Raises
    ------
    KeyError
        For a word the grammar does not produce.
    """
    return _CLASS_OF[english_word.lower()]


def target_word_classes(pair: Pair) -> list[str]:
    """The class of every target word: the highest-ranked class (see :data:`WORD_CLASSES`) of
    the English words it is aligned to (``j'aime`` ← I, like → ``verb``)."""
    src = pair.src.split()
    linked: dict[int, set[str]] = {}
    for i, j in pair.alignment:
        linked.setdefault(j, set()).add(word_class(src[i]))
    rank = {c: k for k, c in enumerate(WORD_CLASSES)}
    return [min(linked[j], key=rank.__getitem__) for j in range(len(pair.tgt.split()))]


def vocabulary(langs: Iterable[str] = LANGS) -> list[str]:
    """Every lowercased whitespace word of English and of ``langs``, sorted."""
    words: set[str] = set()
    for m in covering_meanings():
        for lang in langs:
            p = render(m, lang)
            words.update(p.src.lower().split())
            words.update(p.tgt.split())
    return sorted(words)
