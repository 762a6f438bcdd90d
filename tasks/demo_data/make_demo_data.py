"""python -m tasks.demo_data.make_demo_data [--seed 2024] [--out-dir DIR] [--check-only]

Writes a small, made-up Chinese demo dataset for the three generation tasks of this project:

  dureader_qg/{train,dev}.json   {"context", "answer", "question", "id"}   question generation
  advertisegen/{train,dev}.json  {"content", "summary"}                   ad copy from attributes
  lcsts_new/{train,dev}.json     {"id", "content", "summary"}             headline generation

Everything is composed from the templates and vocabularies below (no text from any real dataset),
with random.Random(seed), so the same seed gives byte-identical files. Each file is JSON lines
(ensure_ascii=False, trailing newline) and is written atomically (temp file + os.replace).
After writing, the files are checked (line counts, answers/values/numbers present, no train/dev
overlap); --check-only runs just the checks.
"""
import argparse
import json
import os
import random
import re
import sys

from paddle_unimo.fileio import write_jsonl

HERE = os.path.dirname(os.path.abspath(__file__))
N_TRAIN, N_DEV = 240, 40

SYL = "青石柳桥云溪松岭枫林白沙金河兰泉鹿鸣竹湾安平清水凤阳梅山黛屿澜岑朔岚泓栖禾川"
PROVINCES = ["河北省", "山西省", "浙江省", "福建省", "湖南省", "四川省", "云南省", "江西省", "安徽省", "广东省"]
SURNAMES = "王李张刘陈杨赵黄周吴孙郑何林"
GIVEN = {"他": "志明建国宇杰磊涛军浩伟强", "她": "静丽晓婷芳敏燕霞莉娟雪"}  # by pronoun
JOBS = {"中学教师": "中学", "外科医生": "医院", "护士": "医院", "建筑设计师": "建筑设计院", "邮递员": "邮政所",
        "厨师": "饭店", "软件工程师": "科技公司", "律师": "律师事务所", "农艺师": "农业合作社", "摄影师": "摄影工作室"}
CROPS = ["茶叶", "柑橘", "板栗", "莲藕", "蜂蜜", "核桃", "红薯", "香菇"]
GOODS = ["电饭煲", "台灯", "电热水壶", "吸尘器", "榨汁机", "电风扇", "加湿器", "空气炸锅"]
DISHES = ["蒸碗", "炖锅", "小炒", "烩面", "卷饼", "汤", "焖饭", "酥饼"]
INGREDIENTS = ["牛肉", "羊肉", "豆腐", "鲫鱼", "土豆", "莲藕", "糯米", "香菇", "鸡肉", "萝卜"]
TASTES = ["酸辣", "咸鲜", "香甜", "麻辣", "清淡"]
ERAS = ["明代", "清代", "宋代", "民国时期"]


def name(rng, n=2):
    return "".join(rng.sample(SYL, n))


def dec(rng, lo, hi):
    """A number with one decimal drawn from [lo/10, hi/10], written without a trailing ".0"."""
    return f"{rng.randint(lo, hi) / 10:g}"


# ---------------------------------------------------------------- DuReaderQG-style items
# Each fact kind: (predicate templates with {a} = answer span, answer generator, question templates).
def qg_entity(rng):
    """Return (name, alias, facts) for one made-up entity; facts = {kind: (preds, answer, questions)}."""
    kind = rng.choice(["town", "product", "bridge", "person", "dish"])
    year = lambda lo, hi: f"{rng.randint(lo, hi)}年"
    if kind == "town":
        suffix = rng.choice(["镇", "乡", "村"])
        ent, alias = name(rng) + suffix, "该" + suffix
        facts = {
            "prov": (["位于{a}", "地处{a}"], rng.choice(PROVINCES), ["{n}在哪个省", "{n}位于哪里", "{n}属于哪个省份"]),
            "pop": (["常住人口约为{a}", "现有常住人口{a}", "常住人口达到{a}"],
                    f"{dec(rng, 3, 99)}万人", ["{n}常住人口多少", "{n}有多少人口", "{n}人口多少"]),
            "area": (["总面积约{a}", "辖区面积{a}"], f"{rng.randint(12, 480)}平方公里", ["{n}面积多大", "{n}总面积是多少"]),
            "crop": (["以盛产{a}闻名", "的特产是{a}"], rng.choice(CROPS), ["{n}盛产什么", "{n}的特产是什么"]),
        }
    elif kind == "product":
        ent, alias = name(rng) + "牌" + rng.choice(GOODS), "这款产品"
        facts = {
            "price": (["售价为{a}", "目前的零售价是{a}"], f"{rng.randint(59, 1999)}元", ["{n}多少钱", "{n}价格", "{n}售价是多少"]),
            "weight": (["净重约{a}", "重量为{a}"], f"{dec(rng, 8, 95)}千克", ["{n}有多重", "{n}重量"]),
            "year": (["于{a}上市", "最早在{a}推出"], year(2008, 2023), ["{n}什么时候上市", "{n}哪一年上市的"]),
            "origin": (["产自{a}", "的生产基地在{a}"], rng.choice(PROVINCES), ["{n}是哪里生产的", "{n}产地"]),
        }
    elif kind == "bridge":
        ent, alias = name(rng) + "大桥", "这座桥"
        facts = {
            "year": (["始建于{a}", "于{a}建成通车"], year(1950, 2020), ["{n}哪一年建成", "{n}是什么时候建的", "{n}建于哪一年"]),
            "len": (["全长{a}", "总长度约为{a}"], f"{rng.randint(120, 4800)}米", ["{n}有多长", "{n}全长多少米"]),
            "river": (["横跨{a}", "架设在{a}之上"], name(rng) + rng.choice(["江", "河"]), ["{n}横跨哪条河", "{n}跨越的是哪条河"]),
            "cost": (["总投资约{a}", "建设共花费{a}"], f"{dec(rng, 3, 95)}亿元", ["{n}投资多少钱", "{n}造价多少"]),
        }
    elif kind == "person":
        alias = rng.choice(["他", "她"])
        ent = rng.choice(SURNAMES) + "".join(rng.sample(GIVEN[alias], rng.randint(1, 2)))
        job = rng.choice(sorted(JOBS))
        facts = {
            "job": (["是一名{a}", "的职业是{a}"], job, ["{n}是做什么工作的", "{n}的职业是什么", "{n}是干什么的"]),
            "born": (["出生于{a}", "生于{a}"], year(1950, 2000), ["{n}哪一年出生", "{n}是哪年生的"]),
            "home": (["来自{a}", "的老家在{a}"], rng.choice(PROVINCES), ["{n}是哪里人", "{n}老家在哪"]),
            "org": (["在{a}工作", "目前任职于{a}"], name(rng) + JOBS[job],
                    ["{n}在哪里工作", "{n}在哪个单位上班"]),
        }
    else:
        ent, alias = name(rng) + rng.choice(DISHES), "这道菜"
        facts = {
            "main": (["的主要食材是{a}", "主要用{a}制作"], rng.choice(INGREDIENTS), ["{n}的主要食材是什么", "{n}用什么做的"]),
            "era": (["起源于{a}", "最早出现在{a}"], rng.choice(ERAS), ["{n}起源于什么时候", "{n}最早出现在什么时候"]),
            "time": (["烹饪时间约{a}", "通常要做{a}"], f"{rng.randint(10, 150)}分钟", ["{n}要做多久", "{n}烹饪时间多长"]),
            "taste": (["口味偏{a}", "吃起来以{a}为主"], rng.choice(TASTES), ["{n}是什么口味", "{n}什么味道"]),
        }
    return ent, alias, facts


def make_qg(rng):
    ent, alias, facts = qg_entity(rng)
    kinds = rng.sample(sorted(facts), rng.randint(1, 4))
    preds = [rng.choice(facts[k][0]).format(a=facts[k][1]) for k in kinds]
    n_sent = rng.randint(1, min(3, len(preds)))
    cuts = sorted(rng.sample(range(1, len(preds)), n_sent - 1))
    groups = [preds[i:j] for i, j in zip([0] + cuts, cuts + [len(preds)])]
    sents = []
    for i, g in enumerate(groups):
        subj = ent if i == 0 else alias
        # a predicate starting with 的 needs its own subject when it is not first in the sentence
        sents.append(subj + "，".join(p if j == 0 or p[0] != "的" else alias + p for j, p in enumerate(g)) + "。")
    context = "".join(sents)
    target = rng.choice(kinds)
    answer = facts[target][1]
    question = rng.choice(facts[target][2]).format(n=ent)
    if context.count(answer) != 1 or answer in question:
        return None
    return {"context": context, "answer": answer, "question": question}


# ---------------------------------------------------------------- AdvertiseGen-style items
AD_VALUES = {
    "类型": ["上衣", "裙", "裤"],
    "材质": ["棉", "牛仔布", "针织", "雪纺", "羊毛", "真丝", "亚麻", "涤纶"],
    "颜色": ["白色", "黑色", "红色", "蓝色", "深蓝色", "灰色", "米白色", "卡其色", "粉色", "绿色"],
    "风格": ["简约", "复古", "文艺", "休闲", "通勤", "街头", "甜美", "学院"],
    "图案": ["刺绣", "条纹", "格子", "印花", "纯色", "波点", "字母"],
    "衣样式": ["衬衫", "外套", "卫衣", "毛衣", "T恤", "开衫"],
    "衣领型": ["圆领", "翻领", "v领", "立领", "连帽"],
    "裙长": ["短裙", "中长裙", "长裙"],
    "裤长": ["九分裤", "七分裤", "长裤", "短裤"],
    "版型": ["宽松", "修身", "直筒"],
}
AD_KEYS_FOR = {  # which optional keys fit which garment type, in content order
    "上衣": ["材质", "颜色", "风格", "图案", "衣样式", "衣领型", "版型"],
    "裙": ["材质", "颜色", "风格", "图案", "裙长", "版型"],
    "裤": ["材质", "颜色", "风格", "图案", "裤长", "版型"],
}
TYPE_NOUN = {"上衣": "上衣", "裙": "裙子", "裤": "裤子"}
AD_PHRASES = {  # clauses; {v} is the attribute value, used verbatim
    "颜色": ["选用{v}作为主色调", "以{v}为底色", "{v}的色调干净耐看"],
    "材质": ["采用{v}面料", "选用{v}材质打造", "{v}面料摸起来很舒服"],
    "衣样式": ["做成{v}的款式", "以{v}的样式呈现"],
    "裙长": ["设计成{v}款式", "{v}的长度利落大方"],
    "裤长": ["做成{v}的长度", "{v}的裁剪干净利落"],
    "版型": ["采用{v}版型", "{v}的剪裁让上身效果更自然"],
    "衣领型": ["搭配{v}设计", "{v}的领口设计很有精神"],
    "风格": ["整体带来{v}的气息", "呈现出{v}风格", "轻松演绎{v}风"],
    "图案": ["融入{v}元素", "{v}的设计增添了看点", "点缀{v}细节"],
}
AD_GROUPS = [["颜色", "材质", "衣样式", "裙长", "裤长"], ["版型", "衣领型"], ["风格", "图案"]]
AD_LEADS = [[""], ["", "在剪裁上，"], ["", "此外，", "同时，"]]  # openers for later sentences
AD_TAILS = ["日常穿着很百搭", "细节处见用心", "轻松穿出好气质", "上身舒适自在", "适合多种场合穿搭"]


def make_ad(rng):
    typ = rng.choice(AD_VALUES["类型"])
    keys = sorted(rng.sample(AD_KEYS_FOR[typ], rng.randint(2, 5)), key=AD_KEYS_FOR[typ].index)
    attrs = {"类型": typ}
    for k in keys:
        attrs[k] = rng.choice(AD_VALUES[k])
    if attrs.get("衣样式") in ("毛衣", "开衫") and "材质" in attrs and attrs["材质"] not in ("针织", "羊毛"):
        attrs["材质"] = rng.choice(["针织", "羊毛"])  # 材质 is drawn before 衣样式; keep the pair plausible
    content = "*".join(f"{k}#{v}" for k, v in attrs.items())
    sents, tails = [], rng.sample(AD_TAILS, len(AD_TAILS))
    for group, leads in zip(AD_GROUPS, AD_LEADS):
        clauses = [rng.choice(AD_PHRASES[k]).format(v=attrs[k]) for k in group if k in attrs]
        if not clauses:
            continue
        rng.shuffle(clauses)
        if rng.random() < 0.5:
            clauses.append(tails.pop())
        if "版型" not in attrs:
            leads = [lead.replace("在剪裁上", "细节方面") for lead in leads]
        lead = "这款" + TYPE_NOUN[typ] if not sents else rng.choice(leads)
        sents.append(lead + "，".join(clauses) + "。")
    return {"content": content, "summary": "".join(sents)}


# ---------------------------------------------------------------- LCSTS-style items
COMPANY_SUFFIX = ["科技", "电子", "食品", "物流", "能源", "汽车", "医药", "纺织"]
PRODUCTS = {"智能手表": (399, 2999), "扫地机器人": (999, 4999), "蓝牙耳机": (99, 1299), "平板电脑": (999, 5999)}
PROJECTS = ["新能源产业园", "城市体育中心", "滨江公园", "科技创新园区", "综合医院"]
HOLIDAYS = ["春节", "五一", "国庆", "端午"]
DRIVERS = ["海外市场的扩张", "新产品线的投产", "成本控制的加强", "线上渠道的增长"]

# (lead, details, summaries); fields filled from the dict built in make_lcsts
LCSTS_EVENTS = [
    ("{co}{m}月{d}日发布年报，{y}年公司实现营业收入{rev}亿元，同比增长{pct}%。",
     ["其中净利润为{np}亿元。", "公司表示，业绩增长主要得益于{drv}。", "截至去年底，公司员工总数约{emp}人。",
      "{co}成立于{fy}年，总部位于{city}。"],
     ["{co}{y}年营收{rev}亿元，同比增长{pct}%", "{co}{y}年营收增长{pct}%", "{co}去年营收达{rev}亿元"]),
    ("{city}地铁{k}号线{m}月{d}日正式开通运营，线路全长{km}公里，共设车站{st}座。",
     ["全程运行时间约{min}分钟。", "该线路连接{city}老城区和新城区。", "开通首日客流量达到{v}万人次。",
      "这是{city}开通的第{k}条地铁线路。"],
     ["{city}地铁{k}号线开通，全长{km}公里", "{city}地铁{k}号线正式开通，设站{st}座"]),
    ("据{city}文旅局统计，今年{hol}假期全市共接待游客{v}万人次，同比增长{pct}%。",
     ["实现旅游收入{inc}亿元。", "其中外地游客占比约{share}%。", "各主要景区秩序良好，未发生安全事故。",
      "民宿和农家乐的预订量明显上升。"],
     ["{city}{hol}假期接待游客{v}万人次", "{city}{hol}游客量同比增长{pct}%"]),
    ("{tco}{m}月{d}日在{city}发布新款{prod}，起售价为{p}元，将于下月正式开售。",
     ["新品的续航时间提升至{h}小时。", "首批备货约{q}万件。", "这是{tco}今年发布的第{k}款新品。",
      "业内人士认为，这一价格具有一定竞争力。"],
     ["{tco}发布新款{prod}，售价{p}元", "{tco}新款{prod}起售价{p}元"]),
    ("{city}近日宣布，将投资{inv}亿元建设{proj}，项目预计{fy2}年建成。",
     ["项目占地约{area}亩。", "建成后预计可提供就业岗位{jobs}个。", "项目已于{m}月{d}日开工。",
      "当地表示，将同步完善周边道路和公交配套。"],
     ["{city}拟投资{inv}亿元建设{proj}", "{city}将建{proj}，总投资{inv}亿元"]),
    ("{co}{m}月{d}日宣布，今年计划招聘应届毕业生{n}人，比去年增加{inc2}人。",
     ["新招聘岗位主要集中在研发和生产部门。", "应届生起薪约为每月{sal}元。", "{co}目前在{city}设有{k}个生产基地。",
      "招聘工作将持续到年底。"],
     ["{co}今年计划招聘{n}名应届生", "{co}将招应届生{n}人，比去年多{inc2}人"]),
]


def make_lcsts(rng):
    city = name(rng) + rng.choice(["市", "市", "县"])
    r = rng.randint
    f = dict(
        co=name(rng) + rng.choice(COMPANY_SUFFIX), city=city, m=r(1, 12), d=r(1, 28), y=r(2015, 2026),
        rev=dec(rng, 15, 990), pct=r(3, 45), np=dec(rng, 5, 90), drv=rng.choice(DRIVERS),
        emp=r(300, 9000), fy=r(1985, 2012), k=r(2, 9), km=dec(rng, 150, 600), st=r(12, 38),
        min=r(35, 90), v=dec(rng, 12, 480), hol=rng.choice(HOLIDAYS), inc=dec(rng, 8, 150),
        share=r(20, 70), prod=rng.choice(sorted(PRODUCTS)), h=r(8, 40), q=r(2, 50),
        inv=r(5, 300), proj=rng.choice(PROJECTS), area=r(80, 1500), jobs=r(200, 5000), n=r(60, 2000),
        inc2=r(10, 300), sal=r(4, 12) * 1000, fy2=r(2026, 2030),
        tco=name(rng) + rng.choice(["科技", "电子", "智能"]),
    )
    f["p"] = r(*PRODUCTS[f["prod"]])
    lead, details, summaries = rng.choice(LCSTS_EVENTS)
    content = lead.format(**f) + "".join(details[i].format(**f) for i in sorted(rng.sample(range(len(details)), rng.randint(1, 3))))
    summary = rng.choice(summaries).format(**f)
    if not (60 <= len(content) <= 150 and 10 <= len(summary) <= 25):
        return None
    return {"content": content, "summary": summary}


# ---------------------------------------------------------------- writing and checking
TASKS = {  # name: (generator, seed offset, key used for de-duplication, field order)
    "dureader_qg": (make_qg, 1, "context", ["context", "answer", "question", "id"]),
    "advertisegen": (make_ad, 2, "content", ["content", "summary"]),
    "lcsts_new": (make_lcsts, 3, "content", ["id", "content", "summary"]),
}


def generate(task, seed):
    make, offset, key, fields = TASKS[task]
    rng = random.Random(seed * 10 + offset)
    items, seen = [], set()
    while len(items) < N_TRAIN + N_DEV:
        item = make(rng)
        if item is None or item[key] in seen:
            continue
        seen.add(item[key])
        items.append(item)
    splits = {"train": items[:N_TRAIN], "dev": items[N_TRAIN:]}
    for rows in splits.values():
        for i, row in enumerate(rows):
            row["id"] = i
    return {s: [{k: row[k] for k in fields} for row in rows] for s, rows in splits.items()}


NUM = re.compile(r"\d+(?:\.\d+)?")


def check_item(task, row):
    """Return a list of problems with one row (empty when fine)."""
    errs = [f"empty field {k}" for k, v in row.items() if v == "" or v is None]
    if task == "dureader_qg" and row["answer"] not in row["context"]:
        errs.append("answer not in context")
    if task == "advertisegen":
        pairs = [kv.split("#") for kv in row["content"].split("*")]
        keys = [k for k, _ in pairs]
        if keys[0] != "类型" or not 3 <= len(pairs) <= 6 or any(k not in AD_VALUES for k in keys):
            errs.append("bad content keys")
        errs += [f"value {v} missing" for _, v in pairs if v not in row["summary"]]
        rest = row["summary"]
        for v in sorted((v for _, v in pairs), key=len, reverse=True):
            rest = rest.replace(v, "□")
        errs += [f"unlisted value {v} in summary" for vs in AD_VALUES.values() for v in vs if v in rest]
    if task == "lcsts_new":
        if not (60 <= len(row["content"]) <= 150 and 10 <= len(row["summary"]) <= 25):
            errs.append("length out of range")
        missing = set(NUM.findall(row["summary"])) - set(NUM.findall(row["content"]))
        errs += [f"number {n} not in content" for n in sorted(missing)]
    return errs


def check(out_dir):
    problems = []
    for task, (_, _, key, fields) in TASKS.items():
        texts = {}
        for split, n in (("train", N_TRAIN), ("dev", N_DEV)):
            path = os.path.join(out_dir, task, split + ".json")
            with open(path, encoding="utf-8") as fh:
                raw = fh.read()
            lines = raw.split("\n")
            if not raw.endswith("\n") or len(lines) - 1 != n:
                problems.append(f"{path}: expected {n} lines with a trailing newline")
            rows = [json.loads(line) for line in lines[:-1]]
            for i, row in enumerate(rows):
                if list(row) != fields:
                    problems.append(f"{path}:{i + 1}: fields {list(row)}")
                problems += [f"{path}:{i + 1}: {e}" for e in check_item(task, row)]
            texts[split] = {json.dumps({k: v for k, v in r.items() if k != "id"}, ensure_ascii=False) for r in rows}
            texts[split + "_key"] = {r[key] for r in rows}
            print(f"{task}/{split}.json: {len(rows)} lines")
        if texts["train"] & texts["dev"] or texts["train_key"] & texts["dev_key"]:
            problems.append(f"{task}: train and dev share items")
    return problems


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1].strip())
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--out-dir", default=HERE)
    ap.add_argument("--check-only", action="store_true", help="only check the existing files")
    args = ap.parse_args(argv)
    if not args.check_only:
        for task in TASKS:
            for split, rows in generate(task, args.seed).items():
                write_jsonl(os.path.join(args.out_dir, task, split + ".json"), rows)
    problems = check(args.out_dir)
    for p in problems:
        print("PROBLEM:", p, file=sys.stderr)
    print("checks:", "FAILED" if problems else "all passed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
