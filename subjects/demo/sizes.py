"""How much ``loaddemo`` creates: fixed master data plus customers that grow with ``--scale``.

At ``--members 2000 --scale 1`` (the default) the counts are exactly:

=================== ======  ==================== ======
subject type         count  relationship type     count
=================== ======  ==================== ======
business_line            3  in_region                20
brand                    5  of_brand                 20
region                   7  doctor_works_at          40
clinic                  20  consultant_works_at      60
doctor                  40  member_of             2,200
consultant              60  visited               2,200
project                 15  purchased             1,000
member               2,000  treated_by              500
rel_served_by          500  served_by               500
nutritionist            12  authored_by              40
content                 40  follows                 200
product                 20  consulted                67
nutrition_user         200  product_purchased       100
store                   10  store_in_region          10
shopping_guide          30  store_of_brand           10
retail_customer        200  guide_works_at           30
rel_guided_by          100  shopped_at              200
                            guided_by               100
=================== ======  ==================== ======

3,262 subjects and 7,297 relationships. Members come in groups of ten: nine
people and, as the tenth record, the first person of the group again in another
brand's CRM (same name, phone and birth date), so 10 % of the records are a
second-brand identity and that person is ``member_of`` both brands. ``--scale N``
multiplies members, nutrition users and retail customers (and their
relationships) by N: ``--scale 500`` gives 1,000,000 members, 1,500,262 subjects
and 3,533,564 relationships.
"""

from __future__ import annotations

from dataclasses import dataclass

GROUP = 10  # member records per group: nine people and one second-brand record
CLINICS = 20
DOCTORS_PER_CLINIC = 2
CONSULTANTS_PER_CLINIC = 3
PROJECTS = 15
NUTRITIONISTS = 12
CONTENTS = 40
PRODUCTS = 20
STORES = 10
GUIDES_PER_STORE = 3


def every(n: int, step: int, offset: int = 0) -> int:
    """How many ``i`` in ``range(n)`` have ``i % step == offset``."""
    return len(range(offset, n, step))


@dataclass(frozen=True)
class Sizes:
    members: int
    nutrition_users: int
    retail_customers: int

    @classmethod
    def of(cls, *, members: int = 2000, scale: int = 1) -> Sizes:
        if members <= 0 or members % GROUP or scale <= 0:
            raise ValueError(f"members must be a positive multiple of {GROUP} and scale positive")
        return cls(members * scale, members // 10 * scale, members // 10 * scale)

    def subject_counts(self) -> dict[str, int]:
        m, u, c = self.members, self.nutrition_users, self.retail_customers
        return {
            "business_line": 3,
            "brand": 5,
            "region": 7,
            "clinic": CLINICS,
            "doctor": CLINICS * DOCTORS_PER_CLINIC,
            "consultant": CLINICS * CONSULTANTS_PER_CLINIC,
            "project": PROJECTS,
            "member": m,
            "rel_served_by": every(m, 4, 1),
            "nutritionist": NUTRITIONISTS,
            "content": CONTENTS,
            "product": PRODUCTS,
            "nutrition_user": u,
            "store": STORES,
            "shopping_guide": STORES * GUIDES_PER_STORE,
            "retail_customer": c,
            "rel_guided_by": every(c, 2),
        }

    def relationship_counts(self) -> dict[str, int]:
        m, u, c = self.members, self.nutrition_users, self.retail_customers
        return {
            "in_region": CLINICS,
            "of_brand": CLINICS,
            "doctor_works_at": CLINICS * DOCTORS_PER_CLINIC,
            "consultant_works_at": CLINICS * CONSULTANTS_PER_CLINIC,
            "member_of": m + every(m, GROUP, GROUP - 1),
            "visited": m + every(m, GROUP, 3),
            "purchased": every(m, 2),
            "treated_by": every(m, 4),
            "served_by": every(m, 4, 1),
            "authored_by": CONTENTS,
            "follows": u,
            "consulted": every(u, 3),
            "product_purchased": every(u, 2),
            "store_in_region": STORES,
            "store_of_brand": STORES,
            "guide_works_at": STORES * GUIDES_PER_STORE,
            "shopped_at": c,
            "guided_by": every(c, 2),
        }
