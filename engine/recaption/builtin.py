"""The built-in recaptioner: offline, deterministic, vocabulary and grammar based.

A grammar turns a short prompt into a caption. Two kinds are provided:
- `DenseGrammar` keeps the user's prompt verbatim as the first sentence and adds a sentence for
  each aspect of a video caption the prompt does not already cover (subject, setting, motion,
  camera, lighting, style), then elaborations until the caption reaches `min_words`, never past
  `max_words`. An aspect counts as covered when one of its cue words appears in the prompt.
- `TemplateGrammar` normalises a prompt onto a fixed caption grammar, e.g. the demo model's
  "a {colour} {shape} {motion} on a {background} background": each slot has a vocabulary of
  canonical values with their paraphrases ("crimson" -> "red", "ball" -> "circle"), so prompts
  worded differently from the training captions map onto them.

Invariants: the same (prompt, seed, grammar) always gives the same caption (choices come from a
`random.Random` seeded by a SHA-256 of all three, never from Python's salted `hash`); grammars are
plain frozen data, listed by name in `GRAMMARS`, so a new vocabulary plugs in without touching the
recaption node or the other backends.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from typing import Protocol

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


class CaptionGrammar(Protocol):
    name: str

    def caption(self, prompt: str, seed: int, max_words: int) -> str:
        """The caption for `prompt` (deterministic in prompt, seed and the grammar)."""
        ...


def seeded_rng(grammar: str, prompt: str, seed: int) -> random.Random:
    digest = hashlib.sha256(f"{grammar}\0{seed}\0{prompt}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def words_of(text: str) -> list[str]:
    """Lower-case word tokens ("pitch-black" -> ["pitch", "black"])."""
    return _WORD.findall(text.lower())


def count_words(text: str) -> int:
    return len(text.split())


def contains_phrase(words: list[str], phrase: str) -> bool:
    target = words_of(phrase)
    n = len(target)
    return n > 0 and any(words[i:i + n] == target for i in range(len(words) - n + 1))


# ---- dense captions -------------------------------------------------------------------------

@dataclass(frozen=True)
class Aspect:
    """One aspect of a caption: how to tell the prompt covers it, and what to add when not.

    Sentences may use `{subject}`. `cues` empty means the aspect is always added."""

    name: str
    cues: tuple[str, ...]
    sentences: tuple[str, ...]
    elaborations: tuple[str, ...] = ()
    ing_words_count: bool = False  # any "-ing" verb in the prompt covers it (motion)


@dataclass(frozen=True)
class DenseGrammar:
    name: str
    aspects: tuple[Aspect, ...]
    min_words: int = 80
    subject_stops: frozenset[str] = field(default_factory=frozenset)
    subject_skips: frozenset[str] = field(default_factory=frozenset)  # leading "cinematic", "a"
    framing_nouns: frozenset[str] = field(default_factory=frozenset)  # "shot" in "a shot of X"
    not_verbs: frozenset[str] = field(default_factory=frozenset)  # "-ing" words that are nouns

    def covered(self, aspect: Aspect, words: list[str]) -> bool:
        if aspect.ing_words_count and any(w.endswith("ing") and len(w) > 4 and w not in self.not_verbs
                                          for w in words):
            return True
        return any(contains_phrase(words, cue) for cue in aspect.cues)

    def subject(self, words: list[str]) -> str:
        """The prompt's head noun phrase: up to 3 words after articles and style words, stopping
        at a preposition, a verb or an '-ing' word ("a red circle moving right" -> "red circle",
        "an aerial shot of a lighthouse at dusk" -> "lighthouse")."""
        for i, w in enumerate(words[:-1]):
            if w == "of" and i > 0 and words[i - 1] in self.framing_nouns:
                words = words[i + 1:]
                break
        out: list[str] = []
        for w in words:
            if not out and w in self.subject_skips:
                continue
            if w in self.subject_stops or (w.endswith("ing") and w not in self.not_verbs):
                break
            out.append(w)
            if len(out) == 3:
                break
        return " ".join(out) or "scene"

    def caption(self, prompt: str, seed: int, max_words: int) -> str:
        text = " ".join(prompt.split())
        if not text:
            return ""
        rng = seeded_rng(self.name, text, seed)
        words = words_of(text)
        subject = self.subject(words)
        first = text[0].upper() + text[1:]
        parts = [first if first[-1] in ".!?" else first + "."]
        budget = max(max_words, count_words(parts[0]))  # the user's words are never cut
        target = min(self.min_words, budget)
        missing = [rng.choice(a.sentences) for a in self.aspects if not self.covered(a, words)]
        extras = [s for a in self.aspects for s in a.elaborations]
        rng.shuffle(extras)
        total = count_words(parts[0])
        for sentence in missing:  # first what the prompt lacks, in aspect order
            sentence = sentence.format(subject=subject)
            if total + count_words(sentence) <= budget:
                parts.append(sentence)
                total += count_words(sentence)
        for sentence in extras:  # then elaborations, only up to the target length
            sentence = sentence.format(subject=subject)
            if total >= target:
                break
            if total + count_words(sentence) <= budget:
                parts.append(sentence)
                total += count_words(sentence)
        return " ".join(parts)


_PLACE_CUES = (
    "in a", "in an", "in the", "on a", "on an", "on the", "at a", "at the", "over a", "over the",
    "inside", "outside", "indoors", "outdoors", "background", "backdrop", "room", "street", "city",
    "forest", "beach", "sky", "field", "ocean", "sea", "desert", "mountain", "mountains", "kitchen",
    "studio", "garden", "park", "space", "underwater", "river", "lake", "snow", "road", "landscape",
    "windowsill", "meadow", "stage", "cafe", "office", "village", "jungle", "valley")
_MOTION_CUES = (
    "moves", "move", "runs", "walks", "flies", "swims", "jumps", "dances", "spins", "rolls",
    "falls", "rises", "glides", "drifts", "bounces", "turns", "slides", "sways", "floats", "flows",
    "races", "chases", "crawls", "climbs", "sleeps", "sits", "stands", "still", "motion")
_CAMERA_CUES = (
    "camera", "shot", "close up", "closeup", "close-up", "pan", "pans", "zoom", "zooms",
    "tracking", "dolly", "aerial", "drone", "handheld", "wide angle", "pov", "framing", "angle",
    "overhead", "top down")
_LIGHT_CUES = (
    "light", "lit", "lighting", "sunlight", "sunset", "sunrise", "dawn", "dusk", "night", "neon",
    "glow", "glowing", "shadow", "shadows", "backlit", "golden hour", "moonlight", "candlelight",
    "bright", "dark", "dim", "sunny", "overcast", "fog", "foggy", "misty")
_STYLE_CUES = (
    "cinematic", "realistic", "photorealistic", "photo", "anime", "cartoon", "watercolor",
    "watercolour", "painting", "illustration", "3d", "render", "pixel art", "film", "vintage",
    "documentary", "style", "sketch", "claymation", "minimalist", "abstract", "flat", "retro")

DENSE = DenseGrammar(
    name="dense",
    aspects=(
        Aspect("subject", (), (
            "The {subject} is the clear focus of every frame, sharply detailed, with a distinct "
            "silhouette and consistent colours.",
            "The {subject} stays clearly visible throughout, its shape and colours crisp and "
            "consistent from frame to frame.",
        )),
        Aspect("setting", _PLACE_CUES, (
            "The scene is simple and uncluttered, so nothing distracts from the {subject}.",
            "The surroundings are calm and open, leaving the {subject} space to stand out.",
        ), ("The background stays steady and uncluttered behind the {subject}.",)),
        Aspect("motion", _MOTION_CUES, (
            "The {subject} moves smoothly and continuously, with natural, fluid motion from the "
            "first frame to the last.",
            "Its movement is steady and unhurried, flowing naturally through the whole clip.",
        ), ("The motion is smooth and continuous, without jumps or stutter.",),
            ing_words_count=True),
        Aspect("camera", _CAMERA_CUES, (
            "The camera holds a steady medium shot at eye level, keeping the {subject} well framed.",
            "A locked-off camera frames the scene in a stable wide shot, with no shake.",
        ), ("The framing is balanced, with the {subject} kept comfortably inside the frame.",)),
        Aspect("lighting", _LIGHT_CUES, (
            "Soft, even lighting models the shapes with gentle shadows and balanced contrast.",
            "Clean, diffuse light falls evenly across the scene, with clear contrast and no glare.",
        ), ("Colours stay true and saturated under the consistent lighting.",)),
        Aspect("style", _STYLE_CUES, (
            "Clean, high-quality video with sharp focus, smooth motion and rich, natural colours.",
            "Crisp, detailed, high-definition footage with a clean, modern look.",
        ), ("Every frame is sharp and free of noise, flicker or distortion.",
            "The overall look is clean and coherent from start to finish.")),
    ),
    subject_stops=frozenset((
        "on", "in", "at", "over", "under", "across", "through", "with", "by", "near", "into",
        "onto", "from", "to", "and", "while", "as", "is", "are", "was", "against", "above",
        "below", "behind", "along", "around", "toward", "towards", *_MOTION_CUES)),
    subject_skips=frozenset(("a", "an", "the", "some", "one", "two", "three", "this", "that",
                             *(c for c in _STYLE_CUES + _CAMERA_CUES if " " not in c))),
    framing_nouns=frozenset(("shot", "video", "footage", "view", "clip", "image", "scene", "photo",
                             "picture", "timelapse", "closeup", "up", "shots", "animation")),
    not_verbs=frozenset(("lighting", "painting", "building", "morning", "evening", "ceiling",
                         "clothing", "something", "nothing", "everything", "ring", "king", "thing",
                         "string", "wing", "spring", "sing", "swing")),
)


# ---- template captions ----------------------------------------------------------------------

@dataclass(frozen=True)
class SlotVocabulary:
    """Canonical values of one template slot and the phrases that mean them.

    `anchors` route a match to this slot when one of them follows within two words (so "black"
    in "on a pitch-black backdrop" fills {background}, not {colour}). `default` fills the slot
    when the prompt names none; None picks a value with the seeded generator."""

    values: dict[str, tuple[str, ...]]
    default: str | None = None
    anchors: tuple[str, ...] = ()

    def phrases(self) -> list[tuple[list[str], str]]:
        """(phrase words, canonical value), longest phrases first."""
        out = [(words_of(p), value) for value, syns in self.values.items() for p in (value, *syns)]
        return sorted(out, key=lambda item: -len(item[0]))


@dataclass(frozen=True)
class TemplateGrammar:
    name: str
    template: str  # str.format template naming every slot, e.g. "a {colour} {shape} ..."
    slots: dict[str, SlotVocabulary]

    def _matches(self, words: list[str], vocab: SlotVocabulary) -> list[tuple[int, int, str]]:
        """(start, end, value) of every vocabulary phrase in `words`, longest phrase first."""
        found: list[tuple[int, int, str]] = []
        taken: set[int] = set()
        for phrase, value in vocab.phrases():
            n = len(phrase)
            for i in range(len(words) - n + 1):
                if words[i:i + n] == phrase and not taken.intersection(range(i, i + n)):
                    found.append((i, i + n, value))
                    taken.update(range(i, i + n))
        return sorted(found)

    def parse(self, prompt: str, seed: int = 0) -> dict[str, str]:
        """Slot -> canonical value for `prompt` (defaults where it names none)."""
        words = words_of(prompt)
        rng = seeded_rng(self.name, " ".join(words), seed)
        claimed: set[int] = set()
        filled: dict[str, str] = {}
        anchored = [n for n, v in self.slots.items() if v.anchors]
        plain = [n for n, v in self.slots.items() if not v.anchors]

        def take(name: str, need_anchor: bool) -> None:
            vocab = self.slots[name]
            for start, end, value in self._matches(words, vocab):
                if claimed.intersection(range(start, end)):
                    continue
                near = words[end:end + 2]
                if need_anchor and not any(a in near for a in vocab.anchors):
                    continue
                filled[name] = value
                claimed.update(range(start, end))  # every word of the phrase, not just its first
                return

        for name in anchored:
            take(name, need_anchor=True)
        for name in plain:
            take(name, need_anchor=False)
        for name in anchored:
            if name not in filled:
                take(name, need_anchor=False)
        for name, vocab in self.slots.items():
            if name not in filled:
                filled[name] = vocab.default if vocab.default is not None \
                    else rng.choice(sorted(vocab.values))
        return filled

    def caption(self, prompt: str, seed: int, max_words: int) -> str:
        return self.template.format(**self.parse(prompt, seed))


# ---- the demo model's caption vocabulary (reelgraph-tiny) -----------------------------------
# Owned by the demo-model work (training/): maps free-form prompts onto the exact caption grammar
# the bundled model was trained on (training.data), "a {colour} {shape} {motion} on a
# {background} background". Phrases are matched longest first; words outside the vocabulary are
# left out of the caption (the model never saw them), slots the prompt does not name get defaults.

TINY_COLOURS = SlotVocabulary(values={
    "red": ("crimson", "scarlet", "ruby", "cherry", "vermilion", "vermillion", "blood red", "rose red",
            "fire engine red", "reddish"),
    "green": ("emerald", "lime", "jade", "bright green", "grass green", "leaf green", "greenish",
              "kelly green", "mint"),
    "blue": ("azure", "cobalt", "sapphire", "sky blue", "royal blue", "bright blue", "cerulean",
             "bluish", "cyan", "turquoise"),
    "yellow": ("golden", "gold", "lemon", "amber", "canary", "mustard", "sunny yellow", "yellowish",
               "butter yellow"),
    "white": ("snowy", "snow white", "ivory", "milky", "pearl", "pale", "chalk white", "bright white",
              "whitish", "silvery white"),
    "purple": ("violet", "lilac", "lavender", "magenta", "plum", "mauve", "amethyst", "purplish",
               "grape", "orchid"),
})
TINY_SHAPES = SlotVocabulary(values={
    "circle": ("ball", "disc", "disk", "dot", "sphere", "orb", "round", "ring", "bubble", "circular",
               "blob", "coin", "balloon"),
    "square": ("box", "cube", "block", "rectangle", "tile", "squared", "crate", "brick", "quad",
               "rectangular"),
    "triangle": ("pyramid", "wedge", "triangular", "delta", "arrowhead", "cone", "trigon"),
}, default="circle")
TINY_MOTIONS = SlotVocabulary(values={
    "moving left": ("left", "leftward", "leftwards", "westward", "westwards", "to the left"),
    "moving right": ("right", "rightward", "rightwards", "eastward", "eastwards", "to the right"),
    "moving up": ("up", "upward", "upwards", "rising", "rises", "rise", "ascending", "ascends",
                  "climbing", "climbs", "lifting", "floating up", "skyward", "skywards"),
    "moving down": ("down", "downward", "downwards", "falling", "falls", "fall", "dropping", "drops",
                    "sinking", "sinks", "descending", "descends", "plunging", "plummeting"),
    "staying still": ("still", "stationary", "motionless", "static", "not moving", "resting", "rests",
                      "sitting", "sits", "standing", "stands", "frozen", "unmoving", "idle",
                      "at rest", "stays put", "staying put", "immobile", "holding still"),
    "growing": ("grows", "grow", "expanding", "expands", "getting bigger", "gets bigger",
                "enlarging", "enlarges", "swelling", "swells", "inflating", "inflates",
                "scaling up", "scales up", "increasing in size", "becoming larger", "ballooning"),
}, default="staying still")
TINY_BACKGROUNDS = SlotVocabulary(values={
    "black": ("pitch black", "jet black", "inky", "ebony", "dark", "black void", "midnight black",
              "coal black", "onyx"),
    "gray": ("grey", "silver", "slate", "ash", "ashen", "charcoal", "neutral gray", "neutral grey",
             "mid gray", "mid grey", "greyish", "grayish", "stone"),
    "navy": ("navy blue", "dark blue", "midnight blue", "deep blue", "indigo", "ink blue",
             "marine blue", "deep navy"),
    "dark green": ("forest green", "deep green", "hunter green", "bottle green", "olive",
                   "dark emerald", "pine green", "moss green", "forest"),
}, default="black", anchors=("background", "backdrop", "backgrounds", "backdrops", "bg", "canvas",
                             "field", "surface", "scene", "setting", "wall", "screen"))

REELGRAPH_TINY = TemplateGrammar(
    name="reelgraph-tiny",
    template="a {colour} {shape} {motion} on a {background} background",
    slots={"colour": TINY_COLOURS, "shape": TINY_SHAPES, "motion": TINY_MOTIONS,
           "background": TINY_BACKGROUNDS},
)


# ---- the grammars the builtin backend offers by name ----------------------------------------

# Static, like a node's choices: a new grammar (e.g. the demo model's caption vocabulary) is added
# to this table in code; callers with their own grammar pass the object to `builtin_caption`.
GRAMMARS: dict[str, CaptionGrammar] = {g.name: g for g in (DENSE, REELGRAPH_TINY)}


def get_grammar(name: str) -> CaptionGrammar:
    try:
        return GRAMMARS[name]
    except KeyError:
        raise KeyError(f"unknown caption grammar {name!r}; known: {', '.join(GRAMMARS)}") from None


def builtin_caption(prompt: str, seed: int = 0, max_words: int = 100,
                    grammar: str | CaptionGrammar = "dense") -> str:
    """Caption `prompt` with a grammar given by name (see GRAMMARS) or as an object."""
    g = get_grammar(grammar) if isinstance(grammar, str) else grammar
    return g.caption(prompt, seed, max_words)
