"""Writes the FuseLLM sample corpus (train/validation/test JSONL, one {"text": ...} per line).

A MiniPile-like plain-text corpus in miniature, written for this project: hand-written paragraphs
(prose in several languages, code, numbers, lists) combined deterministically into documents, a
few of them long enough (over 2,000 tokens) to exercise the long-text split of docs/design.md 12.1.

    python data/fusellm_sample/make_corpus.py      # rewrites the three .jsonl files next to it
"""

import json
import random
from pathlib import Path

PROSE_EN = [
    "The lighthouse keeper counted the ships every evening. Most nights there were three or four, "
    "fishing boats heading home with their lamps swinging, but in winter the harbour was often empty "
    "and he wrote a single zero in the ledger before climbing the stairs to trim the wick.",
    "Bread rises because yeast turns sugar into carbon dioxide. The gas is trapped by a web of gluten, "
    "the same stretchy protein network that makes a good dough feel elastic under the palm of your hand. "
    "Salt slows the yeast down a little, which is why bakers never add it straight onto the starter.",
    "On the morning of the survey the river was higher than anyone had measured before. The team moved "
    "the gauges twice, recorded the flow at noon, and spent the afternoon arguing about whether the "
    "old stone bridge would still be standing by the end of the week.",
    "A good map leaves things out. The cartographer decides which streams are worth a blue line, which "
    "paths deserve a dashed one, and which villages are too small to name; every choice makes the paper "
    "easier to read and a little less true to the ground it describes.",
    "Chess clocks were introduced in the late nineteenth century, after a few tournament games had lasted "
    "for more than ten hours. Before that, a player who was losing could simply wait, staring at the "
    "board, until the opponent gave up and offered a draw out of sheer exhaustion.",
    "The committee met in a room without windows. Someone had brought oranges, and by the third hour the "
    "table was covered in peel, printed agendas and a long list of amendments that nobody could remember "
    "proposing, although every one of them carried a signature.",
    "Honeybees dance to tell each other where the flowers are. The angle of the waggle run against the "
    "vertical comb gives the direction relative to the sun, and its length gives the distance, so a "
    "forager returning from a field two kilometres away dances for longer than one from the garden.",
    "When the power failed, the village fell quiet in a way nobody had heard for years. Refrigerators "
    "stopped humming, the school's heating ticked as it cooled, and children went outside to look at "
    "stars that were usually hidden behind the orange glow of the street lamps.",
    "Glaciers move like very slow rivers. Ice near the surface is brittle and cracks into crevasses, "
    "while deeper layers deform under their own weight; a stone dropped on the glacier today may reach "
    "the melting snout two centuries from now, polished and rounded by the journey.",
    "Her grandfather repaired watches in a workshop no larger than a wardrobe. He kept the tiny screws "
    "in glass jars labelled by thread size, and he could tell, just by listening, whether a balance "
    "wheel was running fast or slow before he even opened the case.",
]
PROSE_OTHER = [
    # German
    "Der Zug hatte zwanzig Minuten Verspätung, aber niemand beschwerte sich. Draußen lag Schnee auf den "
    "Feldern, und im Abteil roch es nach Kaffee und nassen Mänteln. Eine ältere Dame las Zeitung, ein "
    "Kind zählte die Strommasten, die am Fenster vorbeizogen.",
    "Im Garten wachsen Tomaten, Bohnen und drei Sorten Kürbis. Jeden Abend gießt Herr Weber die Beete "
    "mit Regenwasser aus der alten Zinkwanne, weil er meint, dass das Leitungswasser die Erde zu hart macht.",
    # French
    "La boulangerie ouvre à six heures, mais la file commence bien avant. On y parle de la météo, du "
    "match de dimanche et du prix du beurre, qui a encore augmenté ce mois-ci, au grand désespoir des "
    "pâtissiers du quartier.",
    "Le musée avait prêté ses plus beaux tableaux pour l'exposition d'été. Dans la dernière salle, une "
    "petite toile représentant un port au crépuscule attirait plus de visiteurs que les grandes fresques.",
    # Spanish
    "El mercado se llena los sábados por la mañana. Hay puestos de fruta, de queso y de flores, y un "
    "señor mayor que afila cuchillos mientras cuenta historias de cuando el río todavía llegaba hasta "
    "la plaza del ayuntamiento.",
    "Aprender a tocar la guitarra requiere paciencia. Los primeros acordes duelen en las yemas de los "
    "dedos, pero después de unas semanas la mano encuentra las posiciones casi sin pensar.",
    # Italian
    "La nonna preparava la pasta a mano ogni domenica. Stendeva la sfoglia sul tavolo di legno con un "
    "mattarello lunghissimo e tagliava le tagliatelle con un coltello che nessun altro poteva toccare.",
    # Russian
    "Поезд медленно въезжал на станцию. На платформе стояли люди с чемоданами, продавщица предлагала "
    "горячие пирожки, а где-то вдалеке лаяла собака, которой, кажется, не нравился гудок паровоза.",
    # Chinese
    "春天来了，河边的柳树发出了新芽。孩子们在草地上放风筝，老人们坐在长椅上下棋，空气里都是花的香味。",
    "这座城市有很多老街，每条街都有自己的故事。早上可以喝一碗热豆浆，晚上可以在夜市吃烤串和糖葫芦。",
    # Japanese
    "駅前の小さな本屋は、もう五十年も続いている。店主は毎朝シャッターを開けて、新しい雑誌を棚に並べ、"
    "常連のお客さんと天気の話をする。",
    # Greek
    "Το καλοκαίρι στο νησί ήταν ζεστό και ήσυχο. Οι ψαράδες γύριζαν το πρωί με τις βάρκες τους και "
    "τα παιδιά έπαιζαν στην παραλία μέχρι να δύσει ο ήλιος.",
]
CODE = [
    "def fibonacci(n):\n    \"\"\"Return the first n Fibonacci numbers.\"\"\"\n    numbers = [0, 1]\n"
    "    while len(numbers) < n:\n        numbers.append(numbers[-1] + numbers[-2])\n    return numbers[:n]\n\n\n"
    "if __name__ == \"__main__\":\n    print(fibonacci(12))\n",
    "#include <stdio.h>\n\nint main(void) {\n    int total = 0;\n    for (int i = 1; i <= 100; ++i) {\n"
    "        if (i % 3 == 0 || i % 5 == 0) {\n            total += i;\n        }\n    }\n"
    "    printf(\"%d\\n\", total);\n    return 0;\n}\n",
    "SELECT customer_id, COUNT(*) AS orders, SUM(amount) AS revenue\nFROM orders\n"
    "WHERE created_at >= '2023-01-01'\nGROUP BY customer_id\nHAVING COUNT(*) > 5\nORDER BY revenue DESC\nLIMIT 20;\n",
    "function debounce(fn, delay) {\n  let timer = null;\n  return (...args) => {\n    clearTimeout(timer);\n"
    "    timer = setTimeout(() => fn(...args), delay);\n  };\n}\n\nconst log = debounce(console.log, 250);\n",
    "fn gcd(mut a: u64, mut b: u64) -> u64 {\n    while b != 0 {\n        let t = b;\n        b = a % b;\n"
    "        a = t;\n    }\n    a\n}\n",
    "<html>\n  <body>\n    <h1>Opening hours</h1>\n    <ul>\n      <li>Monday&ndash;Friday: 08:00&ndash;18:00</li>\n"
    "      <li>Saturday: 09:00&ndash;13:00</li>\n    </ul>\n  </body>\n</html>\n",
]
LISTS = [
    "Shopping list:\n- 2 kg potatoes\n- 500 g butter\n- 12 eggs\n- 1 loaf of rye bread\n- olive oil (0.75 l)\n",
    "Steps to replace a bicycle tube:\n1. Shift to the smallest sprocket.\n2. Open the brake and remove the wheel.\n"
    "3. Lever one side of the tyre off the rim.\n4. Pull out the old tube and check the tyre for thorns.\n"
    "5. Insert the new tube, slightly inflated, and refit the tyre by hand.\n",
]


def number_table(rng: random.Random) -> str:
    """A small table of measurements: digits, decimals, dates, units."""
    lines = ["date        station   temp_c   rain_mm   wind_kmh"]
    for day in range(1, rng.randint(6, 14)):
        lines.append(f"2023-{rng.randint(1, 12):02d}-{day:02d}  ST-{rng.randint(100, 999)}   "
                     f"{rng.uniform(-8, 31):6.1f}   {rng.uniform(0, 40):7.2f}   {rng.randint(0, 95):8d}")
    total = rng.randint(1000, 99999)
    lines.append(f"Total rainfall this season: {total / 100:.2f} mm ({total} hundredths), "
                 f"about {total / 3650:.3f} mm per day; 1 in {rng.randint(3, 9)} days were dry.")
    return "\n".join(lines)


def document(rng: random.Random, paragraphs: int) -> str:
    kinds = [PROSE_EN, PROSE_EN, PROSE_OTHER, CODE, LISTS]
    parts = []
    for _ in range(paragraphs):
        kind = rng.choice(kinds + ["table"])
        parts.append(number_table(rng) if kind == "table" else rng.choice(kind))
    return "\n\n".join(parts)


def corpus() -> dict[str, list[str]]:
    rng = random.Random(20240122)
    splits = {"train": 50, "validation": 8, "test": 8}
    out = {}
    for split, count in splits.items():
        texts = []
        for k in range(count):
            # Every eighth document is long (30-45 paragraphs: several thousand tokens).
            paragraphs = rng.randint(30, 45) if k % 8 == 3 else rng.randint(1, 6)
            texts.append(document(rng, paragraphs))
        out[split] = texts
    # A few fixed documents with edge cases: a literal EOS string, one word, emoji and a long number.
    out["train"][5] = "The file ended with </s> and then the text went on, as if nothing had happened."
    out["train"][6] = "Hello"
    out["train"][7] = "Launch at T-minus 10 s 🚀; orbit at 408 km; π ≈ 3.14159265358979323846; 2**64 = 18446744073709551616."
    return out


def main() -> None:
    here = Path(__file__).parent
    for split, texts in corpus().items():
        with open(here / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            for text in texts:
                handle.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
