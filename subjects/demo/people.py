"""Made-up but plausible people, dates and codes, drawn only from a seeded ``random.Random``."""

from __future__ import annotations

import datetime as dt
import random

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高"
GIVEN = "伟芳娜秀敏静丽强磊军洋艳勇杰娟涛明超霞平刚桂英华玲婷雪琳晨悦欣怡"
PHONE_PREFIXES = ("135", "136", "139", "150", "158", "177", "186", "188", "199")
EPOCH = dt.date(2024, 1, 1)


def name(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2))))


def phone(rng: random.Random) -> str:
    return rng.choice(PHONE_PREFIXES) + f"{rng.randrange(10**8):08d}"


def birth_date(rng: random.Random) -> str:
    return (dt.date(1965, 1, 1) + dt.timedelta(days=rng.randrange(365 * 40))).isoformat()


def day(rng: random.Random, *, after: str | None = None, span: int = 730) -> str:
    """A date in the two demo years 2024–2025 (or within ``span`` days after ``after``)."""
    start = dt.date.fromisoformat(after[:10]) if after else EPOCH
    return (start + dt.timedelta(days=rng.randrange(span))).isoformat()


def moment(rng: random.Random, *, after: str | None = None, span: int = 730) -> str:
    """An ISO date-time in shop hours, China time, so stored values never depend on the server's zone."""
    return f"{day(rng, after=after, span=span)}T{rng.randrange(9, 21):02d}:{rng.choice((0, 15, 30, 45)):02d}:00+08:00"


def gender(rng: random.Random, female_share: float = 0.8) -> str:
    return "female" if rng.random() < female_share else "male"


def sample(rng: random.Random, values: tuple[str, ...], most: int) -> list[str]:
    """1..``most`` distinct values, in the order of ``values`` so the list is canonical."""
    chosen = set(rng.sample(values, rng.randint(1, most)))
    return [v for v in values if v in chosen]
