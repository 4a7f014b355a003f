#!/usr/bin/env python3
"""Writes corpora/elman-demo.txt: the bundled demo corpus, Chinese and English, written for elman.

Every sentence comes from the templates and word lists below (nothing is copied from elsewhere), mixed by
a seeded generator, so the file is reproducible: `python3 scripts/make_corpus.py` rewrites it byte for byte.

What it teaches, for the chapter's showcase "天空飞过一只__":
- things that fly (小鸟, 蜻蜓, 蝴蝶, 燕子 ...) fly over all kinds of places, counted with 只;
- people walk (一个人, 一位老人), tanks and cars drive (一辆坦克), pigs run (一头猪) — none of them flies,
  and 只 is never followed by 人, 坦克 or 猪;
- the exact phrase 天空飞过一只 never appears (the tests check it), so a model that ranks 小鸟 and 蜻蜓 first
  got there by generalising.
"""
import random
import sys
from pathlib import Path

FORBIDDEN = "天空飞过一只"

ZH_SKY = ["天上", "蓝天上", "山顶上", "湖面上", "河面上", "田野上空", "树林上空", "屋顶上", "村子上空",
          "花园上空", "天空中", "云朵下面", "小河上", "池塘上", "操场上空", "城市上空", "高高的天上"]
ZH_FLYERS = ["小鸟", "蜻蜓", "小鸟", "蜻蜓", "蝴蝶", "燕子", "麻雀", "喜鹊", "鸽子", "老鹰", "蜜蜂", "大雁"]
ZH_FLY_VERBS = ["飞过", "飞来", "飞走了", "飞着", "飞向远方", "飞得很高"]
ZH_GROUND = ["路上", "街上", "门口", "桥上", "村口", "广场上", "小路上", "田边", "山脚下", "院子里"]
ZH_WALKERS = [("个", "人"), ("位", "老人"), ("个", "孩子"), ("位", "农民"), ("个", "学生"), ("位", "老师"),
              ("个", "邮递员")]
ZH_VEHICLES = [("辆", "坦克"), ("辆", "汽车"), ("辆", "卡车"), ("辆", "自行车"), ("辆", "马车")]
ZH_BEASTS = [("头", "猪"), ("头", "牛"), ("头", "大象"), ("匹", "马"), ("只", "小狗"), ("只", "小猫"),
             ("只", "兔子"), ("只", "鸭子")]
ZH_NUMS = ["一", "两", "三", "几", "五", "一"]
ZH_TIMES = ["早上", "中午", "傍晚", "春天", "夏天的午后", "秋天", "雨后", "清晨", "那天", "昨天"]
ZH_PEOPLE = ["小明", "奶奶", "妹妹", "我们", "爷爷", "小红", "老师", "哥哥", "他", "她"]
ZH_SEE = ["看见", "看到", "发现", "指着"]
ZH_FACTS = [
    "小鸟会飞，蜻蜓也会飞。", "蝴蝶会飞，燕子会飞，老鹰飞得最高。", "人不会飞，人只能走路。",
    "坦克不会飞，坦克在地上开。", "猪不会飞，猪在地上跑。", "汽车不会飞，汽车在路上开。",
    "我们说一头猪，两头牛，不用别的量词。", "我们说一个人，一位老人。", "我们说一辆坦克，一辆汽车。",
    "我们说一只小鸟，一只蜻蜓，一只蝴蝶。", "会飞的东西在天上，不会飞的东西在地上。",
    "鸟有翅膀，所以鸟会飞。", "蜻蜓有透明的翅膀。", "坦克很重，它不能飞上天。", "猪很胖，它飞不起来。",
    "人想飞，就要坐飞机。", "天上有白云，也有飞鸟。", "风很大的时候，小鸟飞得很低。",
]
ZH_TALES = [
    "{t}，{p}在{g}{see}一只{f}。那只{f}{v}。",
    "{t}，{sky}{v2}一只{f}，{p}抬头看着它。",
    "{sky}{v2}{n}只{f}。",
    "{g}走过一{m}{w}。",
    "{g}开过一{vm}{veh}，声音很大。",
    "{g}跑过一{bm}{beast}。",
    "{p}说：“你看，{sky}有一只{f}！”",
    "一只{f}从{sky}飞过，{p}很高兴。",
    "{p}在{g}等了很久，只看见一{m}{w}走过来。",
    "{n}{bm}{beast}在{g}慢慢地走。",
    "{t}，{sky}飞过{n}只{f}，{g}走过一{m}{w}。",
]

EN_SKY = ["the sky", "the lake", "the river", "the field", "the roof", "the garden", "the hill", "the town",
          "the pond", "the trees", "the valley", "the bridge"]
EN_FLYERS = ["bird", "dragonfly", "bird", "dragonfly", "butterfly", "swallow", "sparrow", "pigeon",
             "hawk", "bee", "goose", "crow"]
EN_WALKERS = ["man", "woman", "child", "farmer", "teacher", "student", "old man", "postman"]
EN_VEHICLES = ["tank", "car", "truck", "bus", "cart"]
EN_BEASTS = ["pig", "cow", "horse", "dog", "cat", "rabbit", "sheep"]
EN_NAMES = ["Anna", "Tom", "Grandma", "Lily", "the boy", "the girl", "Sam", "my sister", "Mr. Lee"]
EN_TIMES = ["In the morning", "At noon", "In the evening", "One spring day", "After the rain",
            "Early on Sunday", "Last summer", "That afternoon"]
EN_FACTS = [
    "Birds can fly, and so can dragonflies.", "A man cannot fly; he walks on the road.",
    "A tank cannot fly; it rolls along the ground.", "Pigs cannot fly, whatever people say.",
    "Things with wings fly in the sky; things without wings stay on the ground.",
    "A dragonfly has four clear wings.", "The hawk flies higher than any other bird.",
    "People who want to fly take a plane.", "A car drives on the road and a boat sails on the water.",
]
EN_TALES = [
    "{t}, {p} saw a {f} fly over {sky}.",
    "A {f} flew across {sky}, and {p} looked up.",
    "{t}, a {w} walked along the road.",
    "A {veh} drove down the street, loud and slow.",
    "A {beast} ran across the yard.",
    "\"Look,\" said {p}, \"there is a {f} above {sky}!\"",
    "{p} waited by {sky} and watched a {f} fly away.",
    "Over {sky} flew a {f}; under it walked a {w}.",
    "{t}, {p} counted three {fs} flying over {sky}.",
]
PLURAL = {"butterfly": "butterflies", "dragonfly": "dragonflies", "goose": "geese"}


def zh_sentence(r: random.Random) -> str:
    m, w = r.choice(ZH_WALKERS)
    vm, veh = r.choice(ZH_VEHICLES)
    bm, beast = r.choice(ZH_BEASTS)
    return r.choice(ZH_TALES).format(
        t=r.choice(ZH_TIMES), p=r.choice(ZH_PEOPLE), g=r.choice(ZH_GROUND), see=r.choice(ZH_SEE),
        f=r.choice(ZH_FLYERS), v=r.choice(ZH_FLY_VERBS), v2=r.choice(["飞过", "飞来", "飞过了"]),
        sky=r.choice(ZH_SKY), n=r.choice(ZH_NUMS), m=m, w=w, vm=vm, veh=veh, bm=bm, beast=beast)


def en_sentence(r: random.Random) -> str:
    f = r.choice(EN_FLYERS)
    s = r.choice(EN_TALES).format(
        t=r.choice(EN_TIMES), p=r.choice(EN_NAMES), f=f, fs=PLURAL.get(f, f + "s"), sky=r.choice(EN_SKY),
        w=r.choice(EN_WALKERS), veh=r.choice(EN_VEHICLES), beast=r.choice(EN_BEASTS))
    return s[0].upper() + s[1:]


def paragraph(r: random.Random, zh: bool) -> str:
    n = r.randint(3, 6)
    if zh:
        parts = [r.choice(ZH_FACTS) if r.random() < 0.2 else zh_sentence(r) for _ in range(n)]
        return "".join(parts)
    parts = [r.choice(EN_FACTS) if r.random() < 0.2 else en_sentence(r) for _ in range(n)]
    return " ".join(parts)


def main() -> None:
    r = random.Random(13)  # chapter 13
    out = Path(__file__).resolve().parent.parent / "corpora" / "elman-demo.txt"
    paras = []
    size = 0
    while size < 240_000:
        p = paragraph(r, zh=r.random() < 0.55)
        if FORBIDDEN in p:
            continue
        paras.append(p)
        size += len(p.encode("utf-8")) + 1
    text = "\n".join(paras) + "\n"
    assert FORBIDDEN not in text
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out} ({len(text.encode('utf-8'))} bytes, {len(text)} chars, {len(set(text))} distinct)",
          file=sys.stderr)


if __name__ == "__main__":
    main()
