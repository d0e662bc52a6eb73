"""Entity lookups in small built-in tables: one tool per (table, attribute), the entity an enum."""

from __future__ import annotations

from ..catalogue.lookup import COUNTRIES, ELEMENTS, PLANETS
from .spec import ToolSpec, make_tool, prop

__all__ = ["SPECS", "TABLES"]

# table: (entity noun, parameter name, {entity: {attribute: value}}, {attribute: words})
TABLES: dict[str, tuple[str, str, dict[str, dict], dict[str, str]]] = {
    "element": ("chemical element", "element_name",
                {n.capitalize(): dict(zip(("symbol", "atomic_number", "atomic_mass", "category", "period", "group"), v))
                 for n, v in ELEMENTS.items()},
                {"symbol": "chemical symbol", "atomic_number": "atomic number", "atomic_mass": "standard atomic mass",
                 "category": "element category", "period": "period in the periodic table", "group": "group in the periodic table"}),
    "nation": ("country", "country_name",
               {c: {"capital": v[0], "currency_code": v[1], "continent": v[2]} for c, v in COUNTRIES.items()},
               {"capital": "capital city", "currency_code": "ISO currency code", "continent": "continent"}),
    "planet": ("planet", "planet_name", {p: dict(v) for p, v in PLANETS.items()},
               {"diameter_km": "diameter in km", "moons": "number of moons", "orbital_period_days": "orbital period in days",
                "distance_from_sun_million_km": "mean distance from the Sun in million km",
                "surface_gravity_m_s2": "surface gravity in m/s2"}),
    "language": ("programming language", "language",
                 {"Python": {"first_release_year": 1991, "creator": "Guido van Rossum", "typing": "dynamic"},
                  "Java": {"first_release_year": 1995, "creator": "James Gosling", "typing": "static"},
                  "C": {"first_release_year": 1972, "creator": "Dennis Ritchie", "typing": "static"},
                  "Rust": {"first_release_year": 2015, "creator": "Graydon Hoare", "typing": "static"},
                  "Ruby": {"first_release_year": 1995, "creator": "Yukihiro Matsumoto", "typing": "dynamic"},
                  "Go": {"first_release_year": 2009, "creator": "Robert Griesemer, Rob Pike and Ken Thompson", "typing": "static"},
                  "Haskell": {"first_release_year": 1990, "creator": "a committee", "typing": "static"},
                  "Lua": {"first_release_year": 1993, "creator": "Roberto Ierusalimschy and colleagues", "typing": "dynamic"},
                  "Perl": {"first_release_year": 1987, "creator": "Larry Wall", "typing": "dynamic"},
                  "Swift": {"first_release_year": 2014, "creator": "Chris Lattner", "typing": "static"}},
                 {"first_release_year": "first release year", "creator": "creator", "typing": "type discipline"}),
    "mountain": ("mountain", "mountain",
                 {"Everest": {"height_m": 8849, "range": "Himalaya", "first_ascent_year": 1953},
                  "K2": {"height_m": 8611, "range": "Karakoram", "first_ascent_year": 1954},
                  "Denali": {"height_m": 6190, "range": "Alaska Range", "first_ascent_year": 1913},
                  "Kilimanjaro": {"height_m": 5895, "range": "Eastern Rift", "first_ascent_year": 1889},
                  "Mont Blanc": {"height_m": 4806, "range": "Alps", "first_ascent_year": 1786},
                  "Aconcagua": {"height_m": 6961, "range": "Andes", "first_ascent_year": 1897},
                  "Matterhorn": {"height_m": 4478, "range": "Alps", "first_ascent_year": 1865},
                  "Elbrus": {"height_m": 5642, "range": "Caucasus", "first_ascent_year": 1874}},
                 {"height_m": "height in meters", "range": "mountain range", "first_ascent_year": "year of the first ascent"}),
    "river": ("river", "river",
              {"Nile": {"length_km": 6650, "outflow": "Mediterranean Sea", "continent": "Africa"},
               "Amazon": {"length_km": 6400, "outflow": "Atlantic Ocean", "continent": "South America"},
               "Yangtze": {"length_km": 6300, "outflow": "East China Sea", "continent": "Asia"},
               "Mississippi": {"length_km": 3730, "outflow": "Gulf of Mexico", "continent": "North America"},
               "Danube": {"length_km": 2850, "outflow": "Black Sea", "continent": "Europe"},
               "Rhine": {"length_km": 1230, "outflow": "North Sea", "continent": "Europe"},
               "Mekong": {"length_km": 4350, "outflow": "South China Sea", "continent": "Asia"},
               "Volga": {"length_km": 3530, "outflow": "Caspian Sea", "continent": "Europe"}},
              {"length_km": "length in km", "outflow": "mouth (where it flows into)", "continent": "continent"}),
    "animal": ("animal", "animal",
               {"cheetah": {"class": "mammal", "diet": "carnivore", "top_speed_kmh": 110},
                "ostrich": {"class": "bird", "diet": "omnivore", "top_speed_kmh": 70},
                "horse": {"class": "mammal", "diet": "herbivore", "top_speed_kmh": 88},
                "greyhound": {"class": "mammal", "diet": "carnivore", "top_speed_kmh": 72},
                "sailfish": {"class": "fish", "diet": "carnivore", "top_speed_kmh": 110},
                "elephant": {"class": "mammal", "diet": "herbivore", "top_speed_kmh": 40},
                "kangaroo": {"class": "mammal", "diet": "herbivore", "top_speed_kmh": 70},
                "peregrine falcon": {"class": "bird", "diet": "carnivore", "top_speed_kmh": 390}},
               {"class": "zoological class", "diet": "diet", "top_speed_kmh": "top speed in km/h"}),
    "city": ("city", "city",
             {"Tokyo": {"country": "Japan", "utc_offset_hours": 9, "founded_year": 1457},
              "Cape Town": {"country": "South Africa", "utc_offset_hours": 2, "founded_year": 1652},
              "Lima": {"country": "Peru", "utc_offset_hours": -5, "founded_year": 1535},
              "Montreal": {"country": "Canada", "utc_offset_hours": -5, "founded_year": 1642},
              "Melbourne": {"country": "Australia", "utc_offset_hours": 10, "founded_year": 1835},
              "Reykjavik": {"country": "Iceland", "utc_offset_hours": 0, "founded_year": 1786},
              "Nairobi": {"country": "Kenya", "utc_offset_hours": 3, "founded_year": 1899},
              "Singapore": {"country": "Singapore", "utc_offset_hours": 8, "founded_year": 1819}},
             {"country": "country", "utc_offset_hours": "standard UTC offset in hours", "founded_year": "founding year"}),
    "instrument": ("musical instrument", "instrument",
                   {"violin": {"family": "strings", "strings": 4}, "cello": {"family": "strings", "strings": 4},
                    "guitar": {"family": "strings", "strings": 6}, "harp": {"family": "strings", "strings": 47},
                    "ukulele": {"family": "strings", "strings": 4}, "banjo": {"family": "strings", "strings": 5},
                    "double bass": {"family": "strings", "strings": 4}, "mandolin": {"family": "strings", "strings": 8}},
                   {"family": "instrument family", "strings": "number of strings"}),
}


def _spec(key: str, noun: str, param: str, rows: dict[str, dict], attribute: str, words: str) -> ToolSpec:
    entities = list(rows)

    def look_up(**kw):
        return rows[kw[param]][attribute]

    pw = param.replace("_", " ")
    tool = make_tool(f"{key}_{attribute}_lookup", f"Look up the {words} of a {noun} in a small built-in table.",
                     {param: prop("string", f"The {noun}.", enum=entities)}, look_up, "lookup")
    return ToolSpec(tool, f"lookup_{key}", lambda rng: {param: rng.choice(entities)},
                    (f"What is the {words} of {{{param}}}?", f"Tell me the {words} of the {noun} {{{param}}}.",
                     f"Look up {{{param}}}'s {words}."),
                    f"the {words} of {{{param}}}", f"the {words} of a {noun}", f"gives a {noun}'s {words}",
                    axis="wrong_quantity", vary=param,
                    many=(f"What is the {words} of {{list}}?", f"Give me the {words} for each of {{list}}."),
                    partial={param: f"What is the {words} of that {noun} I mentioned?"})


def _all() -> list[ToolSpec]:
    out = []
    for key, (noun, param, rows, words) in TABLES.items():
        for attribute, w in words.items():
            out.append(_spec(key, noun, param, rows, attribute, w))
    return out


SPECS: tuple[ToolSpec, ...] = tuple(_all())
