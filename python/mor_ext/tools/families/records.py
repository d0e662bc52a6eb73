"""Booking, records and inventory-style APIs: per service, the operations search, book, cancel,
status, modify and quote, with nested objects (contact, party), arrays of enums, optional
parameters and defaults. The backend is simulated and deterministic: results are derived from a
hash of the arguments (no state, no network), so the same call always returns the same record."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass

from ..catalogue.common import money
from .rows import random_date
from .spec import ToolSpec, make_tool, prop

__all__ = ["SPECS", "SERVICES"]

CITIES = ("Lisbon", "Oslo", "Lima", "Nairobi", "Seoul", "Denver", "Porto", "Quito", "Hanoi", "Accra", "Perth", "Tallinn")
_NAMES = ("Ana Silva", "Tom Berg", "Mei Chen", "Omar Haddad", "Lena Novak", "Raj Patel", "Sara Kim", "Diego Ruiz")


@dataclass(frozen=True)
class Service:
    key: str  # name prefix
    noun: str  # what is booked
    prefix: str  # confirmation code prefix
    kind_param: str
    kinds: tuple[str, ...]
    extras_param: str
    extras: tuple[str, ...]
    count_param: str  # how many people/units
    unit_price: int


SERVICES = (
    Service("hotel_stay", "hotel room", "HTL", "room_type", ("single", "double", "suite", "family"), "amenities",
            ("wifi", "breakfast", "parking", "pool", "gym"), "guests", 95),
    Service("restaurant_table", "restaurant table", "RST", "seating", ("indoor", "terrace", "bar", "private room"),
            "dietary_needs", ("vegan", "gluten-free", "halal", "kosher", "nut-free"), "party_size", 30),
    Service("car_hire", "rental car", "CAR", "car_class", ("economy", "compact", "suv", "van", "convertible"), "add_ons",
            ("gps", "child seat", "snow chains", "extra driver"), "drivers", 55),
    Service("air_ticket", "flight seat", "AIR", "cabin", ("economy", "premium economy", "business", "first"), "add_ons",
            ("extra bag", "seat selection", "meal", "lounge"), "passengers", 180),
    Service("clinic_visit", "clinic appointment", "MED", "specialty", ("general practice", "dermatology", "dentistry", "physiotherapy"),
            "requests", ("interpreter", "wheelchair access", "video call"), "patients", 70),
    Service("fitness_class", "fitness class spot", "FIT", "class_type", ("yoga", "spinning", "pilates", "boxing", "hiit"),
            "rentals", ("towel", "locker", "mat"), "attendees", 15),
    Service("cinema_seat", "cinema ticket", "CIN", "screen_format", ("2d", "3d", "imax"), "snacks",
            ("popcorn", "drink", "nachos"), "tickets", 12),
    Service("parcel_delivery", "parcel shipment", "PCL", "service_level", ("standard", "express", "overnight"), "options",
            ("insurance", "signature", "sms tracking"), "parcels", 9),
    Service("cowork_desk", "coworking desk", "DSK", "space_type", ("hot desk", "fixed desk", "meeting room", "phone booth"),
            "equipment", ("monitor", "whiteboard", "coffee"), "seats", 25),
    Service("bike_rental", "rental bike", "BIK", "bike_type", ("city", "electric", "mountain", "cargo"), "gear",
            ("helmet", "lock", "child seat", "pannier"), "bikes", 20),
    Service("ferry_crossing", "ferry ticket", "FRY", "fare_class", ("deck", "reclining seat", "cabin"), "extras",
            ("vehicle", "pet", "meal"), "travellers", 40),
    Service("spa_session", "spa session", "SPA", "treatment", ("massage", "facial", "sauna", "hot stone"), "upgrades",
            ("aromatherapy", "longer session", "tea service"), "guests", 60),
    Service("vet_checkup", "vet appointment", "VET", "animal", ("dog", "cat", "rabbit", "bird"), "services",
            ("vaccination", "nail trim", "dental check"), "pets", 45),
    Service("campsite_pitch", "campsite pitch", "CMP", "pitch_type", ("tent", "caravan", "cabin"), "facilities",
            ("electricity", "fire pit", "shower access"), "campers", 22),
    Service("storage_unit", "storage unit", "STO", "unit_size", ("small", "medium", "large", "xl"), "features",
            ("climate control", "24h access", "insurance"), "units", 35),
    Service("tutoring_lesson", "tutoring lesson", "TUT", "subject", ("math", "physics", "chemistry", "english", "music"),
            "materials", ("workbook", "recording", "practice test"), "students", 40),
    Service("museum_entry", "museum ticket", "MUS", "ticket_type", ("adult", "student", "senior", "family"), "add_ons",
            ("audio guide", "guided tour", "special exhibit"), "visitors", 18),
    Service("concert_ticket", "concert ticket", "CON", "section", ("standing", "balcony", "stalls", "vip box"), "add_ons",
            ("parking", "merch bundle", "early entry"), "tickets", 65),
    Service("laundry_pickup", "laundry pickup", "LND", "wash_program", ("regular", "delicate", "dry clean"), "extras",
            ("ironing", "folding", "stain treatment"), "bags", 14),
    Service("boat_charter", "boat charter", "BOT", "boat_type", ("sailboat", "motorboat", "kayak", "catamaran"), "extras",
            ("skipper", "snorkel gear", "lunch"), "passengers", 120),
    Service("driving_lesson", "driving lesson", "DRV", "vehicle", ("manual car", "automatic car", "motorbike"), "extras",
            ("highway practice", "mock test"), "learners", 45),
    Service("photo_shoot", "photo shoot", "PHO", "package", ("portrait", "family", "product", "event"), "extras",
            ("prints", "retouching", "extra hour"), "people", 90),
    Service("golf_tee_time", "golf tee time", "GLF", "course", ("9 holes", "18 holes", "driving range"), "rentals",
            ("clubs", "cart", "balls"), "players", 50),
    Service("kennel_stay", "kennel stay", "KNL", "kennel_size", ("small", "medium", "large"), "services",
            ("walks", "grooming", "medication"), "dogs", 30),
    Service("escape_room", "escape room session", "ESC", "theme", ("pirate", "space", "haunted house", "bank heist"),
            "extras", ("photos", "hints pack", "drinks"), "players", 25),
    Service("language_course", "language course seat", "LNG", "language_level", ("a1", "a2", "b1", "b2", "c1"),
            "materials", ("textbook", "online access", "certificate"), "learners", 150),
    Service("moving_van", "moving van", "MOV", "van_size", ("small", "medium", "large", "luton"), "extras",
            ("helpers", "blankets", "dolly"), "vans", 80),
    Service("tennis_court", "tennis court", "TEN", "surface", ("clay", "grass", "hard"), "rentals",
            ("rackets", "balls", "lights"), "courts", 20),
    Service("bus_tour", "bus tour seat", "BUS", "tour", ("city highlights", "night lights", "countryside"), "extras",
            ("audio guide", "lunch", "hotel pickup"), "riders", 35),
    Service("wine_tasting", "wine tasting", "WIN", "flight", ("red", "white", "sparkling", "mixed"), "extras",
            ("cheese board", "souvenir glass", "cellar tour"), "guests", 40),
)


def _digest(*parts: object) -> int:
    return int(hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12], 16)


def _code(s: Service, *parts: object) -> str:
    return f"{s.prefix}-{_digest(s.key, *parts) % 90000 + 10000}"


def _price(s: Service, kind: str, count: int, extras: list[str] | tuple[str, ...] = ()) -> float:
    return money(s.unit_price * (1 + s.kinds.index(kind) * 0.35) * max(count, 1) + 7.5 * len(extras))


def _contact_schema() -> dict:
    return {"type": "object", "description": "Who the booking is for.",
            "properties": {"name": prop("string", "Full name."), "email": prop("string", "Email address."),
                           "phone": prop("string", "Phone number, optional.")},
            "required": ["name", "email"]}


def _email(name: str) -> str:
    return name.lower().replace(" ", ".") + "@example.com"


def _specs(s: Service) -> list[ToolSpec]:
    noun, kp, xp, cp = s.noun, s.kind_param, s.extras_param, s.count_param
    kind_schema = prop("string", f"The {kp.replace('_', ' ')}.", enum=list(s.kinds))
    extras_schema = {"type": "array", "items": {"type": "string", "enum": list(s.extras)}, "uniqueItems": True,
                     "description": f"Wanted {xp.replace('_', ' ')}.", "default": []}
    city_schema = prop("string", "The city.", enum=list(CITIES))
    count_schema = prop("integer", f"Number of {cp.replace('_', ' ')}.", minimum=1, maximum=12)
    code_schema = prop("string", f"The booking's confirmation code, like {s.prefix}-12345.", pattern=f"^{s.prefix}-[0-9]{{5}}$")
    cw = cp.replace("_", " ")

    def search(city: str, date: str, filters: dict | None = None, **kw) -> list[dict]:
        kw = {**kw, **(filters or {})}
        kinds = [kw[kp]] if kw.get(kp) else list(s.kinds)
        extras = kw.get(xp) or []
        h = _digest("search", city, date, kw)
        out = []
        for i in range(min(3, len(kinds) + 1)):
            kind = kinds[(h >> i) % len(kinds)]
            price = _price(s, kind, kw.get(cp, 1), extras) * (1 + ((h >> (3 * i)) % 5) / 10)
            if kw.get("max_price") is not None and price > kw["max_price"]:
                continue
            out.append({"option_id": f"{s.prefix}-OPT{(h >> (5 * i)) % 900 + 100}", kp: kind, "price": money(price)})
        return out

    def book(city: str, date: str, contact: dict, **kw) -> dict:
        count, extras = kw.get(cp, 1), kw.get(xp) or []
        return {"confirmation": _code(s, city, date, contact, kw), "status": "confirmed", "city": city, "date": date,
                kp: kw[kp], cp: count, "total_price": _price(s, kw[kp], count, extras), "name": contact["name"]}

    def cancel(confirmation: str, reason: str = "other") -> dict:
        return {"confirmation": confirmation, "status": "cancelled", "refund_percent": (50, 80, 100)[_digest(confirmation) % 3]}

    def status(confirmation: str) -> dict:
        h = _digest("status", confirmation)
        return {"confirmation": confirmation, "status": ("confirmed", "pending", "checked in")[h % 3],
                "city": CITIES[h % len(CITIES)], kp: s.kinds[h % len(s.kinds)]}

    def modify(confirmation: str, new_date: str, **kw) -> dict:
        out = {"confirmation": confirmation, "status": "modified", "date": new_date}
        if kw.get(cp) is not None:
            out[cp] = kw[cp]
        return out

    def quote(**kw) -> dict:
        extras = kw.get(xp) or []
        return {kp: kw[kp], cp: kw[cp], "price": _price(s, kw[kp], kw[cp], extras), "currency": "EUR"}

    def base(rng: random.Random) -> dict:
        name = rng.choice(_NAMES)
        return {"city": rng.choice(CITIES), "date": random_date(rng, 2026, 2027), kp: rng.choice(s.kinds),
                cp: rng.randint(1, 6), "name": name, "email": _email(name), "new_date": random_date(rng, 2026, 2027),
                "confirmation": f"{s.prefix}-{rng.randint(10000, 99999)}", "extras_w": "", xp: []}

    def with_extras(rng: random.Random) -> dict:
        f = base(rng)
        if rng.random() < 0.4:
            f[xp] = sorted(rng.sample(s.extras, rng.randint(1, 2)))
            f["extras_w"] = " with " + " and ".join(f[xp])
        return f

    def args_book(f: dict) -> dict:
        a = {"city": f["city"], "date": f["date"], kp: f[kp], cp: f[cp], "contact": {"name": f["name"], "email": f["email"]}}
        if f[xp]:
            a[xp] = f[xp]
        return a

    def args_search(f: dict) -> dict:
        a = {"city": f["city"], "date": f["date"]}
        if f[xp]:
            a["filters"] = {xp: f[xp]}
        return a

    def args_change(f: dict) -> dict:
        return {"confirmation": f["confirmation"], "new_date": f["new_date"]}

    def args_quote(f: dict) -> dict:
        a = {kp: f[kp], cp: f[cp]}
        if f[xp]:
            a[xp] = f[xp]
        return a

    tools = []
    t = make_tool(f"{s.key}_find_options", f"Search available {noun}s in a city on a date; returns up to 3 options with prices.",
                  {"city": city_schema, "date": prop("string", "The date, YYYY-MM-DD."), cp: {**count_schema, "default": 1},
                   "filters": {"type": "object", "description": "Optional filters.",
                               "properties": {kp: kind_schema, xp: extras_schema,
                                              "max_price": prop("number", "Only options up to this price.", minimum=0)}}},
                  search, "bookings", optional=(cp, "filters"))
    tools.append(ToolSpec(t, s.key, with_extras, (f"Find {noun} options in {{city}} on {{date}}{{extras_w}}.",
                                                   f"What {noun}s are available in {{city}} on {{date}}{{extras_w}}?"),
                          f"the {noun} options in {{city}} on {{date}}", f"available {noun}s", f"searches {noun}s",
                          axis="wrong_operation", vary="city", build=args_search,
                          many=(f"Find {noun} options on {{date}} in {{list}}.",),
                          partial={"date": f"Find {noun} options in {{city}}."}))
    t = make_tool(f"{s.key}_make_booking", f"Book a {noun}; returns the confirmation.",
                  {"city": city_schema, "date": prop("string", "The date, YYYY-MM-DD."), kp: kind_schema,
                   cp: {**count_schema, "default": 1}, "contact": _contact_schema(), xp: extras_schema},
                  book, "bookings", optional=(cp, xp))
    tools.append(ToolSpec(t, s.key, with_extras,
                          (f"Book a {{{kp}}} {noun} in {{city}} on {{date}} for {{{cp}}} {cw}{{extras_w}}. Name: {{name}}, email {{email}}.",
                           f"Please reserve a {noun} ({{{kp}}}) in {{city}} for {{date}}, {{{cp}}} {cw}{{extras_w}}, "
                           f"under {{name}} ({{email}})."),
                          f"a {{{kp}}} {noun} in {{city}} on {{date}}", f"a {noun} booking", f"books {noun}s",
                          axis="wrong_operation", vary="date", build=args_book,
                          many=(f"Book a {{{kp}}} {noun} in {{city}} for {{{cp}}} {cw} on each of {{list}}, under {{name}} ({{email}}).",),
                          partial={"date": f"Book a {{{kp}}} {noun} in {{city}} for {{{cp}}} {cw} under {{name}} ({{email}}).",
                                   "contact": f"Book a {{{kp}}} {noun} in {{city}} on {{date}} for {{{cp}}} {cw}."}))
    t = make_tool(f"{s.key}_cancel_booking", f"Cancel a {noun} booking by its confirmation code.",
                  {"confirmation": code_schema,
                   "reason": prop("string", "Why it is cancelled.", enum=["change of plans", "illness", "price", "other"], default="other")},
                  cancel, "bookings", optional=("reason",))
    tools.append(ToolSpec(t, s.key, base, (f"Cancel my {noun} booking {{confirmation}}.", f"Please cancel {noun} reservation {{confirmation}}."),
                          f"the cancellation of {noun} booking {{confirmation}}", f"a {noun} cancellation", f"cancels {noun} bookings",
                          axis="wrong_operation", vary="confirmation", many=(f"Cancel my {noun} bookings {{list}}.",),
                          partial={"confirmation": f"Cancel my {noun} booking, please."}))
    t = make_tool(f"{s.key}_booking_status", f"Look up the status of a {noun} booking.", {"confirmation": code_schema},
                  status, "bookings")
    tools.append(ToolSpec(t, s.key, base, (f"What's the status of {noun} booking {{confirmation}}?",
                                           f"Check on my {noun} reservation {{confirmation}}."),
                          f"the status of {noun} booking {{confirmation}}", f"a {noun} booking's status",
                          f"looks up {noun} booking status", axis="wrong_operation", vary="confirmation",
                          many=(f"Check the status of {noun} bookings {{list}}.",),
                          partial={"confirmation": f"Is my {noun} booking confirmed?"}))
    t = make_tool(f"{s.key}_change_booking", f"Move a {noun} booking to a new date (optionally changing the {cw}).",
                  {"confirmation": code_schema, "new_date": prop("string", "The new date, YYYY-MM-DD."), cp: count_schema},
                  modify, "bookings", optional=(cp,))
    tools.append(ToolSpec(t, s.key, base, (f"Move my {noun} booking {{confirmation}} to {{new_date}}.",
                                           f"Change the date of {noun} reservation {{confirmation}} to {{new_date}}."),
                          f"{noun} booking {{confirmation}} moved to {{new_date}}", f"a changed {noun} booking",
                          f"changes the date of {noun} bookings", axis="wrong_operation", vary="confirmation", build=args_change,
                          many=(f"Move {noun} bookings {{list}} to {{new_date}}.",),
                          partial={"new_date": f"Move my {noun} booking {{confirmation}} to another date."}))
    t = make_tool(f"{s.key}_price_quote", f"Quote the price of a {noun} without booking.",
                  {kp: kind_schema, cp: count_schema, xp: extras_schema}, quote, "bookings", optional=(xp,))
    tools.append(ToolSpec(t, s.key, with_extras, (f"How much is a {{{kp}}} {noun} for {{{cp}}} {cw}{{extras_w}}?",
                                                   f"Give me a price for a {{{kp}}} {noun}, {{{cp}}} {cw}{{extras_w}}."),
                          f"the price of a {{{kp}}} {noun} for {{{cp}}} {cw}", f"a {noun} price", f"quotes {noun} prices",
                          axis="wrong_operation", vary=kp, build=args_quote,
                          many=(f"Quote a {noun} for {{{cp}}} {cw} as each of {{list}}.",),
                          partial={cp: f"How much is a {{{kp}}} {noun}?"}))
    return tools


SPECS: tuple[ToolSpec, ...] = tuple(spec for s in SERVICES for spec in _specs(s))
