"""Rebuild the demo data set for 菏泽市 from the public reference data.

    python3 config/demo/generate.py PATH/TO/shared/data

writes, next to this script:

- ``areas-3717.csv`` … ``villages-3717.csv``: the NBS 2023 statistical
  division codes of 山东省 / 菏泽市 and everything under it (rows copied
  verbatim from the national lists, filtered by code prefix);
- ``boundaries-371700.json``: the county/district boundaries of 菏泽市
  (DataV GeoAtlas, GCJ-02, copied verbatim);
- ``subscribers.csv``: an invented roster on those areas — one 村级信息员
  per village, a 地质灾害隐患点监测员 in every third village, and per
  township a 乡镇值班室, a school and a display board. The numbers are in
  one made-up block (139 0530 xxxx); the demo's channels are sandboxes
  that send nothing. One township (郓城县 随官屯镇, 371725109) is left
  without subscribers so the demo shows a blind spot.

Deterministic: running it twice writes the same files.
"""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PREFIX = "3717"
BLIND_TOWNSHIP = "371725109"
WECHAT_ROBOTS = 9  # one robot name per county-level unit, e.g. "robot-371721"


def _filter(src: Path, dst: Path, keep: str) -> list[list[str]]:
    with src.open(encoding="utf-8") as fh, dst.open("w", encoding="utf-8", newline="") as out:
        reader = csv.reader(fh)
        writer = csv.writer(out, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        header = next(reader)
        writer.writerow(header)
        rows = [row for row in reader if row[0].startswith(keep)]
        writer.writerows(rows)
    return rows


def main(shared: Path) -> None:
    admin, geo = shared / "admin", shared / "geo"
    _filter(admin / "cn-stats2023-provinces.csv", HERE / "provinces-37.csv", "37")
    _filter(admin / "cn-stats2023-cities.csv", HERE / "cities-3717.csv", PREFIX)
    _filter(admin / "cn-stats2023-areas.csv", HERE / "areas-3717.csv", PREFIX)
    streets = _filter(admin / "cn-stats2023-streets.csv", HERE / "streets-3717.csv", PREFIX)
    villages = _filter(
        admin / "cn-stats2023-villages-371700-heze.csv", HERE / "villages-3717.csv", PREFIX
    )
    shutil.copyfile(geo / "datav-371700_full.json", HERE / "boundaries-371700.json")

    header = ["id", "name", "area", "language", "groups", "sms", "email", "wechat", "board"]
    rows: list[list[str]] = []
    serial = 0

    def phone() -> str:
        nonlocal serial
        serial += 1
        return f"1390530{serial:04d}"

    for i, (code, name, *_rest) in enumerate(villages):
        if code.startswith(BLIND_TOWNSHIP):
            continue
        short = name.removesuffix("村民委员会").removesuffix("居民委员会")
        officer = [f"vo-{code}", f"{short}信息员", code, "zh-Hans", "village_officers"]
        rows.append([*officer, phone(), "", "", ""])
        if i % 3 == 0:
            monitor = [f"gm-{code}", f"{short}监测员", code, "zh-Hans", "geo_monitors"]
            rows.append([*monitor, phone(), "", "", ""])
    for code, name, county, *_rest in streets:
        if code == BLIND_TOWNSHIP:
            continue
        robot = f"robot-{county}"
        rows.append(
            [
                f"duty-{code}",
                f"{name}值班室",
                code,
                "zh-Hans",
                "township_duty",
                phone(),
                f"duty-{code}@example.gov.cn",
                robot,
                "",
            ]
        )
        rows.append(
            [f"school-{code}", f"{name}中心小学", code, "zh-Hans", "schools", "",
             f"school-{code}@example.edu.cn", robot, ""]
        )  # fmt: skip
        rows.append(
            [f"board-{code}", f"{name}显示屏", code, "zh-Hans", "boards", "", "", "", f"led-{code}"]
        )
    if serial >= 10_000:
        raise SystemExit("the invented number block 139 0530 xxxx is full")
    with (HERE / "subscribers.csv").open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    print(f"{len(villages)} villages, {len(streets)} townships, {len(rows)} subscribers")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))
