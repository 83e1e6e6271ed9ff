"""The people of `kuaijian demo`: generated producers (生产主体) and the technicians who register samples.

Does: make a seeded, realistic producer list per village — cooperatives, family farms, enterprises, large
growers and individuals with Chinese names, products, plots, and identity codes whose check characters are
correct (GB 32100-2015 credit codes, GB 11643-1999 ID numbers, via `cloud.producers`); and register a
sample on a station gateway's local page exactly as a technician's phone would (an HTML form POST), giving
back the short code the analyzer record then carries.

Does not: store producers (kuaijian.demo does, through `cloud.producers.upsert`), start processes, or
measure anything (the simulators do).
"""

from __future__ import annotations

import random
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from cloud.producers import ProducerIn, id_check, uscc_check

SURNAMES = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗"
GIVEN = (
    "建国",
    "秀英",
    "桂兰",
    "志强",
    "海燕",
    "玉梅",
    "德胜",
    "春生",
    "红霞",
    "立新",
    "凤英",
    "国庆",
    "淑珍",
)
VEGETABLES = (
    "韭菜",
    "豇豆",
    "芹菜",
    "菠菜",
    "黄瓜",
    "番茄",
    "小白菜",
    "生菜",
    "茄子",
    "辣椒",
    "草莓",
    "大葱",
)
BRANDS = ("绿源", "丰收", "田园", "金穗", "惠农", "康鲜", "福满", "青禾")
PLOTS = ("东片", "西片", "南坡", "北地", "大棚")
_ORG_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
GRID_TZ = ZoneInfo("Asia/Shanghai")
KIND_CYCLE = ("合作社", "家庭农场", "种养大户", "企业", "个人")


def _credit_code(rng: random.Random, kind_prefix: str, county: str) -> str:
    body = kind_prefix + county + "".join(rng.choice(_ORG_CHARS) for _ in range(9))
    return body + uscc_check(body)


def _id_number(rng: random.Random, county: str) -> str:
    born = date(1955, 1, 1) + timedelta(days=rng.randrange(365 * 40))
    body = f"{county}{born:%Y%m%d}{rng.randrange(1000):03d}"
    return body + id_check(body)


def _person(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + rng.choice(GIVEN)


def village_producers(
    rng: random.Random, village_code: str, village_name: str, count: int
) -> list[ProducerIn]:
    """`count` producers of one village (types in turn: 合作社, 家庭农场, 种养大户, 企业, 个人)."""
    county = village_code[:6]
    out: list[ProducerIn] = []
    for i in range(count):
        kind = KIND_CYCLE[i % len(KIND_CYCLE)]
        products = tuple(rng.sample(VEGETABLES, rng.randint(1, 3)))
        plots = tuple(f"{rng.choice(PLOTS)}{n}号" for n in rng.sample(range(1, 9), rng.randint(1, 2)))
        owner = _person(rng)
        if kind == "合作社":
            name, code = (
                f"{village_name[:-1]}{rng.choice(BRANDS)}果蔬专业合作社",
                _credit_code(rng, "93", county),
            )
        elif kind == "家庭农场":
            name, code = f"{owner}家庭农场", _credit_code(rng, "92", county)
        elif kind == "种养大户":
            name, code = f"{owner}（种植大户）", _credit_code(rng, "92", county)
        elif kind == "企业":
            name, code = f"青岛{rng.choice(BRANDS)}农业科技有限公司", _credit_code(rng, "91", county)
        else:
            name, code = owner, _id_number(rng, county)
        out.append(
            ProducerIn(
                kind=kind,
                name=name,
                code=code,
                village=village_code,
                contact=owner,
                phone=f"1380000{rng.randrange(10000):04d}",
                products=products,
                plots=plots,
            )
        )
    return out


@dataclass(frozen=True)
class DemoProducer:
    ref: str
    name: str
    products: tuple[str, ...]
    plots: tuple[str, ...]


class RegistrationRefused(RuntimeError):
    """The station page refused a registration (e.g. its producer list has not arrived yet)."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # keep the 303: its Location names the new sample's code


_OPENER = urllib.request.build_opener(_NoRedirect)


def register_on_page(
    page: str, producer: DemoProducer, product: str, rng: random.Random, retest_of: str | None = None
) -> str:
    """POST the registration form of the station page at `page`; returns the sample code."""
    market = datetime.now(GRID_TZ).date() + timedelta(days=rng.randint(1, 5))
    form = {
        "producer": producer.ref,
        "product": product,
        "batch": f"{product}-{market:%m%d}-{rng.randint(1, 9)}",
        "plot": rng.choice(producer.plots) if producer.plots else "",
        "quantity_kg": str(rng.choice((50, 80, 120, 200, 300, 500))),
        "market_date": market.isoformat(),
        "sampler": rng.choice(("张技术员", "李信息员", "王协管员")),
        "retest_of": retest_of or "",
    }
    body = urllib.parse.urlencode(form).encode()
    req = urllib.request.Request(f"{page}/samples", data=body, method="POST")  # noqa: S310 - loopback http
    try:
        with _OPENER.open(req, timeout=5) as resp:  # a 2xx here means the form came back with an error
            raise RegistrationRefused(f"the station page answered {resp.status} without a sample code")
    except urllib.error.HTTPError as exc:
        with exc:
            location = exc.headers.get("Location", "") if exc.code == 303 else ""
        if not location.startswith("/samples/"):
            raise RegistrationRefused(f"the station page answered {exc.code}") from exc
        return urllib.parse.unquote(location.rsplit("/", 1)[1])
    except OSError as exc:
        raise RegistrationRefused(f"the station page is not reachable: {exc}") from exc
