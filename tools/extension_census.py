"""Run the extension compatibility check (`modules.extension_check`) over a folder of A1111 extensions and write
a markdown census: per extension whether it patches ldm internals, whether every A1111 name it uses is found here
(Python / plus page JavaScript and Gradio forms), the first missing name and the prediction; then the missing names
ranked by how many of the non-ldm extensions use them.

    python tools/extension_census.py FOLDER [--list LIST] [--out FILE] [--missing FILE] [--usage-json FILE]

FOLDER holds one folder per extension. LIST (optional) gives the order and the commits read, one extension a line:
`owner/name [stars] [commit]`, matched to the folder `owner+name` (or `name`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from modules.extension_check import ExtensionReport, check_extensions  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_list(path: str) -> list[tuple[str, str, str]]:
    """[(owner/name, stars, commit)] from a list file."""
    rows = []
    for line in open(path, encoding="utf-8"):
        parts = line.split()
        if parts:
            rows.append((parts[0], parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else ""))
    return rows


def folders_in_order(folder: str, listed: list[tuple[str, str, str]]) -> list[tuple[str, str, str, str]]:
    """[(label, path, stars, commit)]: the listed extensions first, in list order, then any other folder."""
    present = {n: os.path.join(folder, n) for n in sorted(os.listdir(folder))
               if os.path.isdir(os.path.join(folder, n))}
    out, used = [], set()
    for repo, stars, commit in listed:
        for candidate in (repo.replace("/", "+"), repo.split("/")[-1]):
            if candidate in present:
                out.append((repo, present[candidate], stars, commit))
                used.add(candidate)
                break
    out += [(n, p, "", "") for n, p in present.items() if n not in used]
    return out


def first_missing(report: ExtensionReport) -> str:
    names = report.missing
    if not names:
        return "—"
    kind = report.names[names[0]]["kind"]
    prefix = {"js_global": "js:", "gradio_form": "gradio:"}.get(kind, "")
    return f"`{prefix}{names[0]}`"


def ranking(reports: list[tuple[str, ExtensionReport]], only_missing: bool) -> list[tuple[str, str, list[str], int]]:
    """[(name, kind, non-ldm extensions using it, guarded-only count)], most used first."""
    users: dict[str, list[str]] = defaultdict(list)
    guarded_only: dict[str, int] = defaultdict(int)
    kinds: dict[str, str] = {}
    for label, report in reports:
        if report.ldm_patching:
            continue
        for name, info in report.names.items():
            if only_missing and not info["missing"]:
                continue
            users[name].append(label)
            kinds[name] = info["kind"]
            guarded_only[name] += bool(info["guarded"])
        if only_missing:
            for package in report.needs_packages:
                if report.packages[package] == "installed by the extension":
                    continue  # its own install.py / requirements.txt provide it
                key = f"package:{package}"
                users[key].append(label)
                kinds[key] = "package (" + report.packages[package] + ")"
    rows = [(name, kinds[name], labels, guarded_only[name]) for name, labels in users.items()]
    rows.sort(key=lambda row: (-len(row[2]), row[0]))
    return rows


def headline(reports: list[tuple[str, ExtensionReport]]) -> list[str]:
    ldm = [r for _, r in reports if r.ldm_patching]
    other = [r for _, r in reports if not r.ldm_patching]
    predicted = defaultdict(int)
    for r in other:
        predicted[r.prediction] += 1
    lines = [
        f"- {len(reports)} extensions; **{len(ldm)}** patch ldm/sgm internals (all predicted incompatible with a "
        f"reason: {'yes' if all(r.prediction == 'incompatible' and r.reason for r in ldm) else 'no'}).",
        f"- Of the other **{len(other)}**: **{sum(r.python_names_found for r in other)}** find every A1111 Python "
        f"name they use outside a guard; **{sum(r.all_names_found for r in other)}** also every page global and "
        f"Gradio form; **{sum(r.all_names_found and not r.missing_guarded for r in other)}** counting guarded uses "
        f"too.",
        "- Predictions for the non-ldm ones: " + ", ".join(f"{k} {predicted[k]}" for k in
                                                          ("should work", "needs packages", "missing names",
                                                           "incompatible")),
    ]
    refused = [label for label, r in reports if not r.ldm_patching and r.incompatible_uses]
    if refused:
        lines.append(f"- Non-ldm extensions using A1111 internals this program refuses (so incompatible): "
                     f"{len(refused)}: {', '.join(refused)}.")
    return lines


def census_markdown(reports: list[tuple[str, ExtensionReport]], rows: list[tuple[str, str, str, str]]) -> str:
    stars = {label: s for label, _, s, _ in rows}
    commits = {label: c for label, _, _, c in rows}
    out = [f"# Extension census, {datetime.date.today().isoformat()}", "",
           "Made by `tools/extension_census.py` with the static check of `modules.extension_check` "
           "(`python webui.py --check-extensions`). A name is found when it imports / `hasattr` here; "
           "uses inside `try` are guarded and do not fail a prediction.", "", "## Headline", ""]
    out += headline(reports)
    out += ["", "## Extensions", "",
            "| # | extension | stars | commit | ldm-patching | all A1111 names found (py / +JS+Gradio) "
            "| first missing name | prediction |", "|---|---|---:|---|---|---|---|---|"]
    for i, (label, r) in enumerate(reports, 1):
        verdict = "incompatible: " + "; ".join(r.ldm_patching) if r.ldm_patching else r.summary()
        verdict = verdict if len(verdict) <= 160 else verdict[:157] + "…"
        out.append(f"| {i} | {label} | {stars.get(label, '')} | {(commits.get(label) or r.commit)[:12]} "
                   f"| {'yes' if r.ldm_patching else 'no'} "
                   f"| {'yes' if r.python_names_found else 'no'} / {'yes' if r.all_names_found else 'no'} "
                   f"| {first_missing(r)} | {verdict} |")
    out += ["", "## Missing names, ranked by the non-ldm extensions using them", "",
            "| name | kind | ext. | guarded in | extensions |", "|---|---|---:|---:|---|"]
    for name, kind, labels, guarded in ranking(reports, only_missing=True):
        out.append(f"| `{name}` | {kind} | {len(labels)} | {guarded} | {', '.join(labels)} |")
    return "\n".join(out) + "\n"


def missing_markdown(reports: list[tuple[str, ExtensionReport]]) -> str:
    non_ldm = sum(1 for _, r in reports if not r.ldm_patching)
    out = [f"# Missing A1111 names ({datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC)", "",
           f"Every A1111 name (Python module/attribute, Script method, `p.` attribute, JS global, cmd_opts flag, "
           f"Gradio form) and package that one of the {non_ldm} non-ldm extensions uses and this program lacks, "
           "ranked by how many of them use it. 'guarded' = how many of those use it only inside try/except. "
           "Regenerate: `python tools/extension_census.py /tmp/census/ext --list /tmp/census/list.txt "
           "--missing /tmp/census/missing.md`.", ""]
    out += headline(reports)
    out += ["", "| # | name | kind | ext. | guarded | extensions |", "|---|---|---|---:|---:|---|"]
    for i, (name, kind, labels, guarded) in enumerate(ranking(reports, only_missing=True), 1):
        out.append(f"| {i} | `{name}` | {kind} | {len(labels)} | {guarded} | {', '.join(labels)} |")
    out += ["", "## Per extension (non-ldm, not all found)", ""]
    for label, r in reports:
        if not r.ldm_patching and (r.missing or r.needs_packages):
            out.append(f"- **{label}**: {r.summary()}")
    return "\n".join(out) + "\n"


def usage_counts(reports: list[tuple[str, ExtensionReport]]) -> dict[str, dict[str, object]]:
    """name -> {kind, count (extensions of all), missing (why, from the first that misses it)} for the manifest."""
    counts: dict[str, dict[str, object]] = {}
    for _, report in reports:
        for name, info in report.names.items():
            entry = counts.setdefault(name, {"kind": info["kind"], "count": 0, "missing": info["missing"]})
            entry["count"] += 1
    return counts


def update_manifest(path: str, reports: list[tuple[str, ExtensionReport]]) -> int:
    """Rewrite the manifest's names from this census: every name two or more extensions use, with this run's
    counts; the kinds and A1111 signatures already recorded are kept (new names get the census kind). Returns the
    number of names."""
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    known = {entry["name"]: entry for entry in manifest["names"]}
    names = []
    for name, info in sorted(usage_counts(reports).items(), key=lambda kv: (-kv[1]["count"], kv[0])):
        if info["count"] < 2:
            continue
        entry = dict(known.get(name, {"name": name, "kind": info["kind"]}))
        entry["count"] = info["count"]
        names.append(entry)
    manifest["names"] = names
    manifest["extensions_read"] = len(reports)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    return len(names)


def signature_mismatches(manifest_path: str) -> list[tuple[str, int, str, list[str]]]:
    """[(name, count, A1111 signature, problems)] for the manifest's callables whose signature here does not take
    A1111's calls (imports this program's modules into this process)."""
    from modules.extension_check_resolve import add_builtin_extension_paths, check_signature

    add_builtin_extension_paths()
    with open(manifest_path, encoding="utf-8") as f:
        entries = json.load(f)["names"]
    rows = []
    for entry in entries:
        if entry.get("signature") and not entry.get("ldm_patching"):
            problems = check_signature(entry["name"], entry["signature"])
            if problems and not problems[0].startswith("missing"):
                rows.append((entry["name"], entry["count"], entry["signature"], problems))
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--list", help="order and commits: 'owner/name [stars] [commit]' a line")
    parser.add_argument("--out", help="the census file (default bench/results/extension-census-<date>.md)")
    parser.add_argument("--missing", help="also write the ranked missing names here")
    parser.add_argument("--usage-json", help="also write every name's use count here (for the manifest)")
    parser.add_argument("--json", help="also write every report as JSON here")
    parser.add_argument("--manifest", help="update this surface manifest (configs/a1111_surface.json) from the run")
    args = parser.parse_args(argv)
    rows = folders_in_order(args.folder, read_list(args.list) if args.list else [])
    checked = check_extensions([path for _, path, _, _ in rows], [label for label, _, _, _ in rows])
    reports = [(label, report) for (label, _, _, _), report in zip(rows, checked)]
    out = args.out or os.path.join(ROOT, "bench", "results", f"extension-census-{datetime.date.today()}.md")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        f.write(census_markdown(reports, rows))
    if args.manifest:
        print(f"manifest: {update_manifest(args.manifest, reports)} names")
    if args.missing:
        text = missing_markdown(reports)
        manifest = args.manifest or os.path.join(ROOT, "configs", "a1111_surface.json")
        if os.path.isfile(manifest):
            text += "\n## A1111 signatures not accepted here (manifest names used by 2+)\n\n"
            for name, count, signature, problems in signature_mismatches(manifest):
                text += f"- `{name}` ({count} ext.): A1111 `{signature}`: {'; '.join(problems)}\n"
        with open(args.missing, "w", encoding="utf-8") as f:
            f.write(text)
    if args.usage_json:
        with open(args.usage_json, "w", encoding="utf-8") as f:
            json.dump(usage_counts(reports), f, indent=1, sort_keys=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({label: r.as_dict() for label, r in reports}, f, indent=1)
    print("\n".join(headline(reports)))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
