"""Write the bundled instruction-following suite: advgame_env/data/instruction_following.jsonl.

    python scripts/make_instruction_suite.py          # rewrite the file
    python scripts/make_instruction_suite.py --check  # exit 1 if the file is not what this script writes

The prompts are in IFEval's format (``key``, ``prompt``, ``instruction_id_list``, ``kwargs``) and use
IFEval's instruction ids, so the checkers of ``if-verifiable`` (a copy of Google's IFEval code) score
them. Everything here is team-written: the everyday tasks, the yes/no questions, the wording of each
instruction and the argument ranges; none of IFEval's own prompts is used. The output is
deterministic (a fixed ``random.Random`` seed).

The wording avoids examples that would satisfy a checker when the prompt is merely echoed (a
bracketed example placeholder, an example title); IFEval's own loophole of naming the required
phrases (the yes/no answers, a postscript marker, keywords) remains, as it must.

Stratification: each instruction type is the *main* instruction of ``PER_TYPE`` prompts; about half
of the prompts get one or two extra instructions drawn from a pool of light ones, never two that
contradict each other (IFEval's own conflict table, plus a few pairs it misses: a lower-case answer
cannot contain a "Section 1" heading). Types whose checker needs NLTK's punkt data, which would be
downloaded at run time, are not used (``LEFT_OUT``).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "advgame_env" / "data" / "instruction_following.jsonl"
SEED = 20261201
PER_TYPE = 14

# Checkers that need NLTK punkt data (a download): sentence counting and word tokenisation.
LEFT_OUT = ("length_constraints:number_sentences", "change_case:capital_word_frequency")

# (task, topic words): the words are relevant to the task, for keyword / forbidden-word instructions
TASKS: list[tuple[str, list[str]]] = [
    (
        "Write a short guide to keeping a basil plant alive on a kitchen windowsill.",
        ["water", "sunlight", "leaves", "pot", "soil"],
    ),
    (
        "Explain to a new cyclist how to fix a flat bicycle tyre at the roadside.",
        ["tube", "pump", "patch", "wheel", "lever"],
    ),
    (
        "Describe a relaxed weekend itinerary for a first visit to Lisbon.",
        ["tram", "pastries", "river", "museum", "hills"],
    ),
    (
        "Give advice to a teenager who wants to save money from a part-time job.",
        ["budget", "savings", "goal", "spending", "account"],
    ),
    (
        "Write a friendly note to a neighbour asking them to water your plants while you travel.",
        ["keys", "plants", "thanks", "week", "watering"],
    ),
    (
        "Explain how compound interest works to someone who has never invested.",
        ["interest", "years", "growth", "rate", "money"],
    ),
    ("Describe how to make a simple tomato sauce from scratch.", ["garlic", "tomatoes", "olive", "simmer", "basil"]),
    (
        "Suggest ways for a remote worker to stay focused at home.",
        ["desk", "schedule", "breaks", "routine", "distractions"],
    ),
    ("Write a product description for a reusable water bottle.", ["steel", "leak", "cold", "bottle", "lid"]),
    ("Explain why the sky looks blue on a clear day.", ["light", "scattering", "wavelength", "atmosphere", "sun"]),
    (
        "Give tips for a first-time dog owner bringing home a rescue dog.",
        ["walks", "crate", "treats", "patience", "vet"],
    ),
    (
        "Describe how to prepare for a job interview at a small design studio.",
        ["portfolio", "questions", "research", "practice", "clothes"],
    ),
    (
        "Write a short story about a lighthouse keeper who finds a message in a bottle.",
        ["lighthouse", "bottle", "storm", "letter", "waves"],
    ),
    ("Explain how to brew a good cup of pour-over coffee.", ["beans", "grind", "kettle", "filter", "temperature"]),
    ("Summarise the benefits of taking a short walk after lunch.", ["digestion", "energy", "mood", "steps", "fresh"]),
    (
        "Write a welcome message for new members of a community gardening club.",
        ["garden", "tools", "seeds", "volunteers", "season"],
    ),
    ("Describe how to clean a cast-iron pan without damaging it.", ["rust", "oil", "seasoning", "scrub", "heat"]),
    ("Give a beginner's explanation of how a rainbow forms.", ["raindrops", "colours", "light", "angle", "refraction"]),
    ("Write a short review of an imaginary neighbourhood bakery.", ["bread", "croissant", "staff", "prices", "coffee"]),
    (
        "Explain how to set up a simple monthly household budget.",
        ["income", "rent", "groceries", "savings", "spreadsheet"],
    ),
    ("Suggest a packing list for a three-day hiking trip.", ["tent", "boots", "water", "map", "jacket"]),
    ("Describe what makes a good board game for a family evening.", ["rules", "players", "luck", "strategy", "fun"]),
    (
        "Write a thank-you email to a teacher at the end of the school year.",
        ["lessons", "patience", "class", "summer", "grateful"],
    ),
    ("Explain how to change a light bulb in a ceiling fixture safely.", ["switch", "ladder", "bulb", "power", "glass"]),
    ("Give advice on learning to play the guitar as an adult.", ["chords", "practice", "fingers", "songs", "teacher"]),
    (
        "Describe the life cycle of a butterfly for a ten-year-old.",
        ["caterpillar", "egg", "chrysalis", "wings", "leaf"],
    ),
    ("Write a short speech for a friend's birthday dinner.", ["friendship", "laughter", "years", "cake", "toast"]),
    ("Explain how to read a nutrition label on packaged food.", ["calories", "sugar", "serving", "protein", "salt"]),
    (
        "Suggest ways to make a small apartment feel more spacious.",
        ["mirrors", "storage", "light", "furniture", "colours"],
    ),
    (
        "Describe how to plan a picnic in the park for six people.",
        ["blanket", "sandwiches", "fruit", "shade", "basket"],
    ),
    ("Write a short poem about the first snowfall of winter.", ["snow", "silence", "white", "cold", "morning"]),
    ("Explain how a library card can save a family money.", ["books", "borrow", "events", "free", "children"]),
    ("Give tips for sleeping better during a heatwave.", ["fan", "curtains", "sheets", "water", "night"]),
    (
        "Describe how to repot a houseplant that has outgrown its container.",
        ["roots", "soil", "pot", "drainage", "water"],
    ),
    (
        "Write a short message to a colleague congratulating them on a promotion.",
        ["promotion", "team", "success", "role", "celebrate"],
    ),
    ("Explain the difference between weather and climate.", ["temperature", "years", "rain", "average", "forecast"]),
    ("Suggest five inexpensive hobbies for a rainy afternoon.", ["drawing", "reading", "puzzles", "baking", "music"]),
    (
        "Describe how to teach a child to ride a bicycle without stabilisers.",
        ["balance", "helmet", "pedals", "confidence", "park"],
    ),
    ("Write a short announcement for a school bake sale.", ["cakes", "cookies", "donations", "friday", "hall"]),
    ("Explain how to prepare a car for a long winter road trip.", ["tyres", "battery", "blanket", "fuel", "scraper"]),
    (
        "Give advice to a student writing their first research essay.",
        ["sources", "outline", "thesis", "draft", "citations"],
    ),
    ("Describe how bees make honey.", ["nectar", "hive", "flowers", "wax", "colony"]),
    (
        "Write a short letter to your future self ten years from now.",
        ["dreams", "future", "memories", "hope", "change"],
    ),
    ("Explain how to politely decline an invitation to a party.", ["invitation", "thanks", "busy", "honest", "friend"]),
    ("Suggest ways to reduce food waste at home.", ["leftovers", "freezer", "shopping", "compost", "list"]),
    ("Describe a good morning routine for a busy parent.", ["breakfast", "alarm", "lunches", "coffee", "school"]),
    (
        "Write a short history of the humble bicycle for a museum placard.",
        ["wheels", "invention", "pedals", "century", "chain"],
    ),
    ("Explain how to choose a ripe avocado at the shop.", ["skin", "colour", "firm", "stem", "squeeze"]),
    ("Give tips for running a productive team meeting.", ["agenda", "time", "notes", "decisions", "questions"]),
    ("Describe how to make paper snowflakes with children.", ["paper", "scissors", "fold", "patterns", "window"]),
    (
        "Write a short advert for a second-hand sofa you are selling.",
        ["sofa", "cushions", "price", "collection", "condition"],
    ),
    ("Explain why people get jet lag and how to ease it.", ["sleep", "sunlight", "timezone", "flight", "body"]),
    ("Suggest a weekly plan for someone starting to jog.", ["minutes", "rest", "shoes", "pace", "stretch"]),
    ("Describe how to host a simple board-game night for friends.", ["snacks", "games", "table", "guests", "rules"]),
    (
        "Write a short fable about a tortoise who learns to ask for help.",
        ["tortoise", "river", "friends", "journey", "lesson"],
    ),
    (
        "Explain how a thermostat keeps a room at a steady temperature.",
        ["heating", "sensor", "temperature", "switch", "degrees"],
    ),
    ("Give advice on keeping houseplants healthy in winter.", ["light", "watering", "radiator", "humidity", "leaves"]),
    (
        "Describe how to write a clear set of directions to your home.",
        ["landmarks", "turn", "street", "parking", "minutes"],
    ),
    (
        "Write a short note to a new neighbour welcoming them to the street.",
        ["welcome", "street", "bins", "neighbours", "coffee"],
    ),
    ("Explain how recycling symbols on plastic packaging work.", ["plastic", "numbers", "bin", "council", "symbols"]),
    (
        "Suggest ways for a family to spend less time on screens in the evening.",
        ["games", "phones", "walks", "dinner", "rules"],
    ),
    ("Describe how to sharpen a kitchen knife with a whetstone.", ["angle", "stone", "blade", "water", "strokes"]),
    ("Write a short diary entry from a cat's point of view.", ["sunbeam", "nap", "bowl", "humans", "window"]),
    ("Explain what a credit score is and why it matters.", ["loans", "payments", "history", "lenders", "debt"]),
    ("Give tips for taking better photos with a phone camera.", ["light", "focus", "lens", "framing", "steady"]),
    ("Describe how to start a small compost heap in a back garden.", ["scraps", "worms", "leaves", "bin", "moisture"]),
    (
        "Write a short invitation to a neighbourhood litter-picking morning.",
        ["gloves", "bags", "park", "saturday", "volunteers"],
    ),
    (
        "Explain how to keep a reading habit going during a busy month.",
        ["pages", "minutes", "bedtime", "library", "goal"],
    ),
    ("Suggest ways to make a long train journey more pleasant.", ["snacks", "book", "window", "headphones", "seat"]),
    ("Describe how to make a simple birdhouse from scrap wood.", ["wood", "nails", "roof", "hole", "paint"]),
    (
        "Write a short pep talk for a friend running their first marathon.",
        ["miles", "training", "finish", "crowd", "proud"],
    ),
    ("Explain how tides are caused by the moon.", ["moon", "gravity", "ocean", "earth", "water"]),
]

# yes/no questions for the constrained-response instruction
QUESTIONS = [
    "Is it worth learning to touch-type as an adult?",
    "Should a beginner runner buy expensive shoes?",
    "Is it a good idea to water houseplants every day?",
    "Can a small balcony grow enough herbs for a family?",
    "Is breakfast the most important meal of the day?",
    "Should children learn to cook before they turn twelve?",
    "Is a paper diary better than a calendar app?",
    "Is it safe to leave a phone charging overnight?",
    "Should you wash raw chicken before cooking it?",
    "Can a board game teach maths to children?",
    "Is it worth repairing an old bicycle instead of buying a new one?",
    "Should a first car be bought new or second-hand?",
    "Do cats need to go outdoors to be happy?",
    "Is reading on a screen as good as reading on paper?",
    "Should a small town have a weekly market?",
    "Is it better to rent than to buy a home in a big city?",
    "Can a short nap improve an afternoon at work?",
    "Is it rude to arrive early to a dinner party?",
]

# the nth paragraph must begin with one of these words
FIRST_WORDS = ["first", "however", "today", "finally", "meanwhile", "remember", "next", "overall", "sometimes", "often"]
END_PHRASES = [
    "Is there anything else I can help with?",
    "Hope this helps!",
    "Let me know what you think.",
    "That is all for now.",
    "Thanks for reading.",
    "Enjoy!",
    "Good luck!",
]
LANGUAGES = {
    "es": "Spanish",
    "fr": "French",
    "de": "German",
    "it": "Italian",
    "pt": "Portuguese",
    "ru": "Russian",
    "pl": "Polish",
    "fi": "Finnish",
    "vi": "Vietnamese",
    "ja": "Japanese",
}
COMMON_LETTERS = "eatonsr"
RARE_LETTERS = "zqjxk"
SECTION_WORDS = ["Section", "SECTION", "Part", "Step", "Chapter"]

Builder = Callable[[random.Random, list[str]], tuple[str, dict[str, Any]]]


def _take(words: list[str], n: int) -> list[str]:
    """Remove and return n topic words (an item never reuses a word across instructions)."""
    taken, words[:] = words[:n], words[n:]
    return taken


def _existence(rng: random.Random, words: list[str]) -> tuple[str, dict[str, Any]]:
    a, b = _take(words, 2)
    return rng.choice(
        [
            f'Be sure to use the words "{a}" and "{b}" somewhere in your answer.',
            f'Your reply must mention both "{a}" and "{b}".',
        ]
    ), {"keywords": [a, b]}


def _frequency(rng: random.Random, words: list[str]) -> tuple[str, dict[str, Any]]:
    (word,) = _take(words, 1)
    if rng.random() < 0.6:
        n = rng.randint(2, 4)
        return f'Use the word "{word}" at least {n} times.', {"keyword": word, "frequency": n, "relation": "at least"}
    n = rng.randint(2, 3)
    return f'Mention the word "{word}" fewer than {n} times.', {
        "keyword": word,
        "frequency": n,
        "relation": "less than",
    }


def _forbidden(rng: random.Random, words: list[str]) -> tuple[str, dict[str, Any]]:
    a, b = _take(words, 2)
    return rng.choice(
        [f'Do not use the words "{a}" or "{b}" anywhere in your reply.', f'Avoid the words "{a}" and "{b}" completely.']
    ), {"forbidden_words": [a, b]}


def _letters(rng: random.Random, words: list[str]) -> tuple[str, dict[str, Any]]:
    if rng.random() < 0.6:
        letter, n = rng.choice(COMMON_LETTERS), rng.randint(8, 20)
        return f'The letter "{letter}" should appear at least {n} times in your response.', {
            "letter": letter,
            "let_frequency": n,
            "let_relation": "at least",
        }
    letter, n = rng.choice(RARE_LETTERS), rng.randint(2, 5)
    return f'The letter "{letter}" should appear fewer than {n} times in your response.', {
        "letter": letter,
        "let_frequency": n,
        "let_relation": "less than",
    }


def _language(rng: random.Random, words: list[str]) -> tuple[str, dict[str, Any]]:
    code = rng.choice(sorted(LANGUAGES))
    return rng.choice(
        [
            f"Write your whole answer in {LANGUAGES[code]} and in no other language.",
            f"Respond only in {LANGUAGES[code]}.",
        ]
    ), {"language": code}


def _paragraphs(rng: random.Random, words: list[str]) -> tuple[str, dict[str, Any]]:
    n = rng.randint(2, 5)
    return (
        f"Organise your answer into exactly {n} paragraphs, separated from one another by a line holding only the markdown divider (three asterisks).",
        {"num_paragraphs": n},
    )


def _words(rng: random.Random, words: list[str]) -> tuple[str, dict[str, Any]]:
    if rng.random() < 0.5:
        n = rng.choice([80, 100, 120, 150, 200, 250, 300])
        return f"Your answer should be at least {n} words long.", {"num_words": n, "relation": "at least"}
    n = rng.choice([40, 50, 60, 80, 100, 150])
    return f"Keep the answer under {n} words.", {"num_words": n, "relation": "less than"}


def _nth_paragraph(rng: random.Random, words: list[str]) -> tuple[str, dict[str, Any]]:
    n = rng.randint(2, 5)
    k = rng.randint(1, n)
    word = rng.choice(FIRST_WORDS)
    ordinal = ["first", "second", "third", "fourth", "fifth"][k - 1]
    return (
        f'Write exactly {n} paragraphs separated by blank lines (paragraphs are split by two new lines). The {ordinal} paragraph must begin with the word "{word}".',
        {"num_paragraphs": n, "nth_paragraph": k, "first_word": word},
    )


def _placeholders(rng: random.Random, words: list[str]) -> tuple[str, dict[str, Any]]:
    n = rng.randint(1, 4)
    return (
        f"Include at least {n} placeholder{'s' if n > 1 else ''} in square brackets for details the reader fills in (a name or a date, say).",
        {"num_placeholders": n},
    )


def _postscript(rng: random.Random, words: list[str]) -> tuple[str, dict[str, Any]]:
    marker = rng.choice(["P.S.", "P.P.S"])
    return f"After the main answer, add a postscript that starts with {marker}", {"postscript_marker": marker}


def _bullets(rng: random.Random, words: list[str]) -> tuple[str, dict[str, Any]]:
    n = rng.randint(2, 6)
    return (
        f'Format the answer as exactly {n} markdown bullet points, each on its own line starting with "* ", and no other list items.',
        {"num_bullets": n},
    )


def _highlights(rng: random.Random, words: list[str]) -> tuple[str, dict[str, Any]]:
    n = rng.randint(1, 4)
    return (
        f"Highlight at least {n} part{'s' if n > 1 else ''} of your answer with markdown italics (a single asterisk on each side).",
        {"num_highlights": n},
    )


def _sections(rng: random.Random, words: list[str]) -> tuple[str, dict[str, Any]]:
    word, n = rng.choice(SECTION_WORDS), rng.randint(2, 5)
    return (
        f"Divide your answer into {n} sections and start each with a heading made of the word {word} and the section's number.",
        {"section_spliter": word, "num_sections": n},
    )


def _json(rng: random.Random, words: list[str]) -> tuple[str, dict[str, Any]]:
    return rng.choice(
        [
            "Give your whole answer as valid JSON; a markdown ```json block around it is fine.",
            "Your entire output must be one valid JSON object and nothing else (markdown code ticks are allowed).",
        ]
    ), {}


def _title(rng: random.Random, words: list[str]) -> tuple[str, dict[str, Any]]:
    return "Give your answer a title and wrap the title in double angular brackets.", {}


def _two(rng: random.Random, words: list[str]) -> tuple[str, dict[str, Any]]:
    return (
        "Give two different answers, separated by a line of six asterisks and with nothing else between them.",
        {},
    )


def _end(rng: random.Random, words: list[str]) -> tuple[str, dict[str, Any]]:
    phrase = rng.choice(END_PHRASES)
    return f'End your response with the exact phrase "{phrase}" and write nothing after it.', {"end_phrase": phrase}


def _quotation(rng: random.Random, words: list[str]) -> tuple[str, dict[str, Any]]:
    return "Put double quotation marks around your entire response.", {}


def _capital(rng: random.Random, words: list[str]) -> tuple[str, dict[str, Any]]:
    return "Write your entire answer in English using only capital letters.", {}


def _lowercase(rng: random.Random, words: list[str]) -> tuple[str, dict[str, Any]]:
    return "Write your entire answer in English using only lowercase letters; no capitals anywhere.", {}


def _no_comma(rng: random.Random, words: list[str]) -> tuple[str, dict[str, Any]]:
    return rng.choice(
        ["Do not use a single comma anywhere in your answer.", "Write the answer without any commas."]
    ), {}


BUILDERS: dict[str, Builder] = {
    "keywords:existence": _existence,
    "keywords:frequency": _frequency,
    "keywords:forbidden_words": _forbidden,
    "keywords:letter_frequency": _letters,
    "language:response_language": _language,
    "length_constraints:number_paragraphs": _paragraphs,
    "length_constraints:number_words": _words,
    "length_constraints:nth_paragraph_first_word": _nth_paragraph,
    "detectable_content:number_placeholders": _placeholders,
    "detectable_content:postscript": _postscript,
    "detectable_format:number_bullet_lists": _bullets,
    "detectable_format:constrained_response": lambda rng, words: ("", {}),  # phrased with its question
    "detectable_format:number_highlighted_sections": _highlights,
    "detectable_format:multiple_sections": _sections,
    "detectable_format:json_format": _json,
    "detectable_format:title": _title,
    "combination:two_responses": _two,
    "combination:repeat_prompt": lambda rng, words: ("", {}),  # phrased around its request
    "startend:end_checker": _end,
    "startend:quotation": _quotation,
    "change_case:english_capital": _capital,
    "change_case:english_lowercase": _lowercase,
    "punctuation:no_comma": _no_comma,
}

# the extra instructions added to a prompt come from these
EXTRAS = [
    "keywords:existence",
    "keywords:frequency",
    "keywords:forbidden_words",
    "keywords:letter_frequency",
    "length_constraints:number_words",
    "detectable_content:number_placeholders",
    "detectable_content:postscript",
    "detectable_format:number_highlighted_sections",
    "detectable_format:title",
    "startend:end_checker",
    "startend:quotation",
    "change_case:english_capital",
    "change_case:english_lowercase",
    "punctuation:no_comma",
]
# pairs IFEval's conflict table allows but a reply cannot satisfy together
EXTRA_CONFLICTS = [
    ("change_case:english_lowercase", "detectable_format:multiple_sections"),  # "Section 1" has a capital
    ("change_case:english_capital", "detectable_format:multiple_sections"),  # "Section 1" is mixed case
    ("combination:repeat_prompt", "punctuation:no_comma"),  # the request to repeat may have commas
    ("change_case:english_capital", "length_constraints:nth_paragraph_first_word"),  # the word is lower case
    ("change_case:english_capital", "keywords:letter_frequency"),
    ("change_case:english_lowercase", "keywords:letter_frequency"),
    ("detectable_format:title", "detectable_format:json_format"),
]


def conflicts() -> dict[str, set[str]]:
    """Symmetric conflict sets: IFEval's own table (as if-verifiable ships it) and EXTRA_CONFLICTS."""
    from if_verifiable.ifeval import instructions_registry as registry

    table = {k: set(v) for k, v in registry.INSTRUCTION_CONFLICTS.items()}
    for a, b in EXTRA_CONFLICTS:
        table.setdefault(a, set()).add(b)
        table.setdefault(b, set()).add(a)
    for key in list(table):
        for other in list(table[key]):
            table.setdefault(other, set()).add(key)
        table[key].add(key)
    return table


def make_items() -> list[dict[str, Any]]:
    rng = random.Random(SEED)
    table = conflicts()
    types = list(BUILDERS)
    tasks = TASKS[:]
    rng.shuffle(tasks)
    questions = QUESTIONS[:]
    rng.shuffle(questions)
    items = []
    for round_ in range(PER_TYPE):
        for position, main in enumerate(types):
            index = round_ * len(types) + position
            task, topic_words = tasks[index % len(tasks)]
            words = topic_words[:]
            rng.shuffle(words)
            ids = [main]
            if main != "detectable_format:constrained_response":
                extras = 0 if rng.random() < 0.5 else (1 if rng.random() < 0.7 else 2)
                for _ in range(extras):
                    allowed = [e for e in EXTRAS if not any(e in table.get(i, set()) for i in ids)]
                    if allowed:
                        ids.append(rng.choice(allowed))
            sentences, kwargs = [], []
            for instruction in ids:
                sentence, args = BUILDERS[instruction](rng, words)
                sentences.append(sentence)
                kwargs.append(args)
            request = " ".join([task, *(s for s in sentences if s)])
            if main == "detectable_format:constrained_response":
                question = questions[round_ % len(questions)]
                prompt = f'{question} Reply with exactly one of these phrases: "My answer is yes.", "My answer is no.", "My answer is maybe."'
            elif main == "combination:repeat_prompt":
                prompt = (
                    "Copy the request after the colon exactly as it is written, then answer it; put nothing "
                    "before the copied request and do not copy these words. The request: " + request
                )
                kwargs[0] = {"prompt_to_repeat": request}
            else:
                prompt = request
            items.append({"key": 1000 + index, "prompt": prompt, "instruction_id_list": ids, "kwargs": kwargs})
    return items


def render(items: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the bundled file differs from the generated one")
    args = parser.parse_args(argv)
    text = render(make_items())
    if args.check:
        same = OUT.exists() and OUT.read_text("utf-8") == text
        print(f"{OUT}: {'up to date' if same else 'differs from the generator output'}")
        return 0 if same else 1
    OUT.write_text(text, "utf-8")
    print(f"wrote {text.count(chr(10))} prompts to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
