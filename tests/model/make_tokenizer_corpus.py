#!/usr/bin/python3
"""Writes tests/model/tokenizer_corpus.json: the texts the tokenizer conformance test encodes with
our tokenizer and with the JS reference. Hand-written samples across scripts, code, LaTeX, emoji,
whitespace and special tokens, plus seeded random mixtures of them.

Run: /usr/bin/python3 tests/model/make_tokenizer_corpus.py > tests/model/tokenizer_corpus.json
"""
import json
import random

samples = [
    "Hello, world! It's a test: we're done, they'll see, I'd say, you've got it, I'm here.",
    "IT'S LOUD. WE'RE SHOUTING. THEY'LL HEAR. I'D AGREE. YOU'VE WON. I'M 'HERE'.",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n\nprint([fib(i) for i in range(10)])\n",
    "#include <vector>\nint main() {\n\tstd::vector<int> v{1, 2, 3};\n\tfor (auto& x : v) x *= 2;  // double\n\treturn v.size() == 3 ? 0 : 1;\n}\n",
    "const f = async (x) => { await new Promise(r => setTimeout(r, 10)); return x ?? 0; };\r\nconsole.log(`${f}`);\r\n",
    "SELECT id, name FROM users WHERE age >= 21 AND name LIKE '%son' ORDER BY id DESC;",
    "{\"task_id\": \"abc-123\", \"reward\": 0.75, \"passed\": false, \"feedback\": \"Test Case 1: Wrong Answer\\nInput: 3\\n\"}",
    "The integral $\\int_0^1 x^2\\,dx = \\frac{1}{3}$ and $\\sum_{k=1}^{n} k = \\frac{n(n+1)}{2}$, so \\boxed{42}.",
    "\\begin{align}\n  e^{i\\pi} + 1 &= 0 \\\\\n  \\nabla \\cdot \\mathbf{E} &= \\frac{\\rho}{\\varepsilon_0}\n\\end{align}",
    "∀ε>0 ∃δ>0: |x−a|<δ ⇒ |f(x)−f(a)|<ε; ∑ ∏ ∫ ∮ √ ∞ ≈ ≠ ≤ ≥ ⊂ ⊆ ∈ ∉ ℝ ℕ ℤ ℚ ℂ",
    "机器学习是人工智能的一个分支。它使计算机能够从数据中学习，而无需明确编程。",
    "日本語のテキスト：東京は日本の首都です。カタカナ、ひらがな、漢字が混ざっています。",
    "한국어 문장입니다. 서울은 대한민국의 수도입니다. 안녕하세요!",
    "Привет, мир! Это тест токенизатора. Ёлка, щука, съезд.",
    "Γειά σου Κόσμε! Η γλώσσα είναι ελληνική. ΑΒΓΔ αβγδ",
    "مرحبا بالعالم! هذا اختبار للمحلل. العربية تكتب من اليمين إلى اليسار.",
    "שלום עולם! זהו מבחן. עברית נכתבת מימין לשמאל.",
    "नमस्ते दुनिया! यह एक परीक्षण है। हिन्दी देवनागरी लिपि में लिखी जाती है।",
    "สวัสดีชาวโลก นี่คือการทดสอบ ภาษาไทยไม่มีช่องว่างระหว่างคำ",
    "Tiếng Việt có dấu: Xin chào thế giới! Đây là một bài kiểm tra.",
    "Ελληνικά, Türkçe: İstanbul, ıöüşğç; Polski: zażółć gęślą jaźń; Čeština: příliš žluťoučký kůň.",
    "Emoji: 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇺🇸🇯🇵 ❤️ ✨🚀🔥 🧑🏿‍💻",
    "Whitespace:    four spaces,\t\ttwo tabs,\n\n\nthree newlines,\r\n\r\nCRLF, trailing   ",
    "   leading spaces and\u00a0nbsp\u00a0here\u3000ideographic space\u2003em space",
    "\n\n\n\n",
    "          ",
    "\t",
    "a  b   c    d     e",
    "Numbers: 3.14159265358979 1234567890 0x1F 1e-9 -42 1,000,000 ٣٤٥ ४५६ ①②③",
    "Special: <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\nhmm\n</think>\n\nHello<|im_end|><|endoftext|>",
    "Tool: <tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call> <|fim_prefix|>x<|fim_suffix|>y<|fim_middle|>",
    "Almost special: <|im_start <im_end|> <|unknown|> </think <think > <|endoftext|",
    "Combining: e\u0301 a\u0308 o\u0302\u0323 n\u0303 A\u030a \u1100\u1161\u11a8 (decomposed Hangul) q\u0307\u0323",
    "Precomposed: é ä ộ ñ Å 각 ḍ̇",
    "Zero width: a\u200bb\u200cc\u200dd\ufeffe \u2060 soft\u00adhyphen",
    "URLs: https://example.com/path?q=1&r=two#frag mailto:someone@example.org",
    "Markdown: # Title\n\n- item *one*\n- item **two**\n\n```python\nx = 1\n```\n> quote",
    "Repeated: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa !!!!!!!!!!!!!!!! ............ ------",
    "Mixed scripts: hello世界мир🌍 abcابج 123漢字",
    "Apostrophes: don’t ‘quoted’ “double” rock'n'roll O'Neil's '90s",
    "Control-ish: bell\u0007 backspace\u0008 form\u000cfeed vertical\u000btab escape\u001b[0m",
    "Private/rare: \U0001d54f\U0001d552\U0001d553 \U00020000\U0002a6d6 \U0001f9ec \u2603 \u00b5 \u212b",
    "",
    "x",
    " ",
    "'s",
    "1234567890123456789012345678901234567890",
]

rng = random.Random(20260523)
pools = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "0123456789",
    " \t\n\r   ",
    "!@#$%^&*()_+-=[]{};':\",./<>?\\|`~",
    "机器学习人工智能数据日本語東京한국어서울",
    "Приветмирαβγδεζηθ",
    "مرحبابالعالمשלוםעולם",
    "😀👍🏽🚀🔥❤️✨",
    "éäöüßñçøåœ",
    "\u0301\u0308\u0323\u0302",
    "'s 're 'll ",
]
for i in range(120):
    n = rng.randint(1, 80)
    text = "".join(rng.choice(rng.choice(pools)) for _ in range(n))
    samples.append(text)

print(json.dumps(samples, ensure_ascii=False, indent=0))
