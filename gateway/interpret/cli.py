"""`kuaijian interpret gold|enzyme FILE`: interpret recorded raw analyzer data offline and print results.

Does: read profiles / images / kinetics from .npy, .npz, .csv or .json files (formats in
docs/interpret.md), pick the kit or enzyme profile (built-in demo kits, GB/T 5009.199 / NY/T 448, or a
JSON spec / pushed StationConfig), run `gateway.interpret` and print a table or JSON.

Does not: talk to instruments, store or publish anything. Exit codes: 0 interpreted, 2 unusable input
(message on stderr).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from kuaijian_schema.specs import EnzymeSpec, StripSpec

ENZYME_PROFILE_ALIASES = {"gb5009": "GB/T 5009.199-2003", "ny448": "NY/T 448"}


class CliInputError(Exception):
    """A file or option the verb cannot use (reported on stderr, exit code 2)."""


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `interpret gold` and `interpret enzyme`."""
    top = subparsers.add_parser(
        "interpret",
        help="interpret recorded raw analyzer data offline",
        description="Interpret recorded colloidal-gold profiles/images or enzyme kinetics and print results.",
    )
    sub = top.add_subparsers(dest="interpret_kind", metavar="KIND")
    sub.required = True

    gold = sub.add_parser(
        "gold",
        help="colloidal-gold reflectance profiles or strip images",
        description="Interpret colloidal-gold profiles (N, L) or strip images (N, H, L[, 3]).",
    )
    gold.add_argument("file", type=Path, metavar="FILE", help=".npy, .csv or .json (see docs/interpret.md)")
    gold.add_argument("--kit", help="kit name (built-in demo kits, or one of the kits in --spec)")
    gold.add_argument("--spec", type=Path, help="StripSpec JSON, or a StationConfig JSON with gold_kits")
    gold.add_argument("--images", action="store_true", help="FILE holds images even if 3-D (N, H, L)")
    gold.add_argument(
        "--median",
        type=int,
        choices=(0, 3, 5),
        default=0,
        help="running median of 3 or 5 px over the line regions first (default 0 = off)",
    )
    gold.add_argument("--format", choices=("table", "json"), default="table")
    gold.set_defaults(func=_gold)

    enz = sub.add_parser(
        "enzyme",
        help="enzyme-inhibition kinetics",
        description="Interpret enzyme-inhibition absorbance kinetics at 412 nm.",
    )
    enz.add_argument(
        "file", type=Path, metavar="FILE", help=".npy, .npz, .csv or .json (see docs/interpret.md)"
    )
    enz.add_argument(
        "--profile",
        help="enzyme profile: gb5009 (GB/T 5009.199, default), ny448 (NY/T 448), or a name in --spec",
    )
    enz.add_argument(
        "--spec", type=Path, help="EnzymeSpec JSON, or a StationConfig JSON with enzyme_profiles"
    )
    enz.add_argument("--control", type=int, help="control channel (CSV/.npy: 0 = first absorbance column)")
    enz.add_argument("--format", choices=("table", "json"), default="table")
    enz.set_defaults(func=_enzyme)


# ---------------------------------------------------------------------------------------------- files


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CliInputError(f"{path}: cannot read JSON: {exc}") from exc


def _read_csv(path: Path) -> tuple[list[str] | None, npt.NDArray[np.float64]]:
    """Numeric table of a CSV file; the first row is a header when it is not numeric; '#' lines skipped."""
    import numpy as np

    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliInputError(f"{path}: cannot read CSV: {exc}") from exc
    rows = [r for r in csv.reader(io.StringIO(text)) if r and not r[0].lstrip().startswith("#")]
    if not rows:
        raise CliInputError(f"{path}: no data rows")
    header: list[str] | None = None
    try:
        float(rows[0][0])
    except ValueError:
        header = [h.strip() for h in rows[0]]
        rows = rows[1:]
    if not rows:
        raise CliInputError(f"{path}: no data rows after the header")
    width = len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != width:
            raise CliInputError(f"{path}: data row {i + 1} has {len(r)} values, the first has {width}")
    try:
        return header, np.array([[float(v) for v in r] for r in rows], dtype=np.float64)
    except ValueError as exc:
        raise CliInputError(f"{path}: non-numeric value: {exc}") from exc


def _load_npy(path: Path) -> npt.NDArray[Any]:
    import numpy as np

    try:
        arr: npt.NDArray[Any] = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CliInputError(f"{path}: cannot read .npy: {exc}") from exc
    return arr


def _suffix(path: Path, allowed: tuple[str, ...]) -> str:
    if not path.exists():
        raise CliInputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in allowed:
        raise CliInputError(f"{path}: unsupported file type {suffix!r}; expected one of {', '.join(allowed)}")
    return suffix


# ---------------------------------------------------------------------------------------------- specs


def _strip_spec(args: argparse.Namespace, doc_kit: str | None, doc_spec: Any) -> StripSpec:
    from pydantic import ValidationError

    from kuaijian_schema.kits import DEMO_KITS
    from kuaijian_schema.specs import StripSpec

    name = args.kit or doc_kit
    try:
        if args.spec is not None:
            spec_doc = _read_json(args.spec)
            if isinstance(spec_doc, dict) and "gold_kits" in spec_doc:
                kits = {k.name: k for k in (StripSpec.model_validate(x) for x in spec_doc["gold_kits"])}
                if name not in kits:
                    raise CliInputError(f"{args.spec}: no kit {name!r}; it has {', '.join(kits) or 'none'}")
                return kits[name]
            return StripSpec.model_validate(spec_doc)
        if doc_spec is not None:
            return StripSpec.model_validate(doc_spec)
    except ValidationError as exc:
        raise CliInputError(f"invalid strip spec: {exc}") from exc
    if name is None:
        raise CliInputError(f"no kit given: use --kit NAME ({', '.join(DEMO_KITS)}) or --spec FILE")
    if name not in DEMO_KITS:
        raise CliInputError(f"unknown kit {name!r}; built-in kits: {', '.join(DEMO_KITS)} (or use --spec)")
    return DEMO_KITS[name]


def _enzyme_spec(args: argparse.Namespace, doc_profile: str | None, doc_spec: Any) -> EnzymeSpec:
    from pydantic import ValidationError

    from kuaijian_schema.specs import GB_T_5009_199, NY_T_448, EnzymeSpec

    name = args.profile or doc_profile
    name = ENZYME_PROFILE_ALIASES.get(name, name) if name else None
    try:
        if args.spec is not None:
            spec_doc = _read_json(args.spec)
            if isinstance(spec_doc, dict) and "enzyme_profiles" in spec_doc:
                profs = {
                    p.name: p for p in (EnzymeSpec.model_validate(x) for x in spec_doc["enzyme_profiles"])
                }
                if name not in profs:
                    raise CliInputError(
                        f"{args.spec}: no profile {name!r}; it has {', '.join(profs) or 'none'}"
                    )
                return profs[name]
            return EnzymeSpec.model_validate(spec_doc)
        if doc_spec is not None:
            return EnzymeSpec.model_validate(doc_spec)
    except ValidationError as exc:
        raise CliInputError(f"invalid enzyme spec: {exc}") from exc
    builtin = {s.name: s for s in (GB_T_5009_199, NY_T_448)}
    if name is None:
        return GB_T_5009_199
    if name not in builtin:
        raise CliInputError(f"unknown enzyme profile {name!r}; built-in: gb5009, ny448 (or use --spec)")
    return builtin[name]


# ---------------------------------------------------------------------------------------------- verbs


def _fmt(v: float | None, digits: int = 3) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def _fmt_conc(v: float | None) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.4g}"


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _gold(args: argparse.Namespace) -> int:
    try:
        return _gold_run(args)
    except CliInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _gold_run(args: argparse.Namespace) -> int:
    import numpy as np

    from gateway.interpret import InterpretError, interpret_strip_images, interpret_strips

    path: Path = args.file
    suffix = _suffix(path, (".npy", ".csv", ".json"))
    doc_kit: str | None = None
    doc_spec: Any = None
    if suffix == ".npy":
        data = _load_npy(path)
    elif suffix == ".csv":
        _, data = _read_csv(path)
    else:
        doc = _read_json(path)
        if not isinstance(doc, dict) or not ({"profiles", "profile", "images"} & doc.keys()):
            raise CliInputError(f'{path}: expected an object with "profiles", "profile" or "images"')
        doc_kit = doc.get("kit")
        doc_spec = doc.get("spec")
        key = next(k for k in ("profiles", "profile", "images") if k in doc)
        try:
            data = np.array(doc[key], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise CliInputError(f'{path}: "{key}" is not a numeric array: {exc}') from exc
        if key == "profile":
            data = data[None]
        args.images = args.images or key == "images"
    spec = _strip_spec(args, doc_kit, doc_spec)
    if data.ndim == 1:
        data = data[None]
    if data.dtype.kind in "iu" and not (args.images or data.ndim >= 3):
        raise CliInputError(f"{path}: profiles must be float reflectance, got dtype {data.dtype}")
    try:
        if args.images or data.ndim >= 3:
            res = interpret_strip_images(data, spec, median=args.median)
        else:
            res = interpret_strips(data, spec, median=args.median)
    except InterpretError as exc:
        raise CliInputError(f"{path}: {exc}") from exc

    records = [
        {
            "strip": i,
            "analyte": analyte,
            "verdict": res.verdict_for(i, k),
            "values": res.values_for(i, k),
            "qc": list(res.flags_for(i, k)),
        }
        for i in range(len(res))
        for k, analyte in enumerate(res.analytes)
    ]
    if args.format == "json":
        out = {
            "kit": res.spec_name,
            "kit_version": res.spec_version,
            "algorithm": res.algorithm,
            "results": records,
        }
        print(json.dumps(out, ensure_ascii=False, indent=2))
        return 0
    print(f"kit {res.spec_name} v{res.spec_version} · {res.algorithm} · {len(res)} strip(s)")
    rows = []
    for i in range(len(res)):
        for k, analyte in enumerate(res.analytes):
            v = res.values_for(i, k)
            rows.append(
                [
                    str(i),
                    analyte,
                    res.verdict_for(i, k),
                    _fmt(v["ratio"]),
                    _fmt(v["control_signal"], 2),
                    _fmt(v["test_signal"], 2),
                    _fmt_conc(v["concentration_mg_kg"]),
                    ",".join(res.flags_for(i, k)),
                ]
            )
    _print_table(["strip", "analyte", "verdict", "T/C", "C", "T", "mg/kg", "qc"], rows)
    return 0


def _enzyme(args: argparse.Namespace) -> int:
    try:
        return _enzyme_run(args)
    except CliInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _enzyme_run(args: argparse.Namespace) -> int:
    import numpy as np

    from gateway.interpret import InterpretError, interpret_kinetics

    path: Path = args.file
    suffix = _suffix(path, (".npy", ".npz", ".csv", ".json"))
    doc_profile: str | None = None
    doc_spec: Any = None
    control: Any
    if suffix in (".csv", ".npy"):
        # one run: time column, then one absorbance column per channel
        header: list[str] | None = None
        if suffix == ".csv":
            header, table = _read_csv(path)
        else:
            table = _load_npy(path)
        if table.ndim != 2 or table.shape[1] < 3:
            raise CliInputError(
                f"{path}: expected a table (T, 1 + C): a time column and ≥ 2 channel columns, got {table.shape}"
            )
        times = np.ascontiguousarray(table[:, 0], dtype=np.float64)
        absorbance = np.ascontiguousarray(table[:, 1:].T, dtype=np.float64)[None]
        control = args.control
        if control is None and header is not None:
            named = [i for i, h in enumerate(header[1:]) if h.lower() == "control"]
            control = named[0] if named else None
        if control is None:
            control = 0
    elif suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                times, absorbance = z["times_s"], z["absorbance"]
                control = z["control"] if "control" in z.files else args.control
        except (OSError, ValueError, KeyError) as exc:
            raise CliInputError(f"{path}: cannot read .npz with times_s and absorbance: {exc}") from exc
        if args.control is not None:
            control = args.control
    else:
        doc = _read_json(path)
        if not isinstance(doc, dict) or not {"times_s", "absorbance"} <= doc.keys():
            raise CliInputError(f'{path}: expected an object with "times_s" and "absorbance"')
        doc_profile = doc.get("profile") if isinstance(doc.get("profile"), str) else None
        doc_spec = doc.get("spec")
        try:
            times = np.array(doc["times_s"], dtype=np.float64)
            absorbance = np.array(doc["absorbance"], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise CliInputError(f"{path}: times_s/absorbance are not numeric arrays: {exc}") from exc
        if absorbance.ndim == 2:
            absorbance = absorbance[None]
        control = args.control if args.control is not None else doc.get("control", 0)
    if control is None:
        raise CliInputError(f"{path}: no control channel: give --control N")
    spec = _enzyme_spec(args, doc_profile, doc_spec)
    try:
        res = interpret_kinetics(times, absorbance, np.asarray(control), spec)
    except InterpretError as exc:
        raise CliInputError(f"{path}: {exc}") from exc

    r_n, c_n = res.verdict.shape
    records = [
        {
            "run": r,
            "channel": c,
            "control": res.is_control(r, c),
            "verdict": res.verdict_for(r, c),
            "values": res.values_for(r, c),
            "qc": list(res.flags_for(r, c)),
        }
        for r in range(r_n)
        for c in range(c_n)
    ]
    if args.format == "json":
        out = {"profile": res.spec_name, "profile_version": res.spec_version, "algorithm": res.algorithm}
        print(json.dumps({**out, "results": records}, ensure_ascii=False, indent=2))
        return 0
    print(f"profile {res.spec_name} v{res.spec_version} · {res.algorithm} · {r_n} run(s) × {c_n} channels")
    rows = []
    for r in range(r_n):
        for c in range(c_n):
            v = res.values_for(r, c)
            rows.append(
                [
                    str(r),
                    str(c) + (" (control)" if res.is_control(r, c) else ""),
                    res.verdict_for(r, c),
                    _fmt(v["inhibition_pct"], 1),
                    _fmt(v["delta_a_sample"]),
                    _fmt(v["delta_a_control"]),
                    ",".join(res.flags_for(r, c)),
                ]
            )
    _print_table(["run", "channel", "verdict", "inhib %", "ΔA", "ΔA ctrl", "qc"], rows)
    return 0
