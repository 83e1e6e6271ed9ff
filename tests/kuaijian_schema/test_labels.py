"""Every analyte of the kit tables and the enzyme method, and every QC flag the gateway can send, has a
Chinese name (and an English one) in kuaijian_schema.labels."""

from __future__ import annotations

import re

from gateway.interpret.codes import EnzymeFlag, GoldFlag, flag_names
from gateway.pipeline import ENZYME_ANALYTE
from kuaijian_schema.kits import DEMO_KITS
from kuaijian_schema.labels import ANALYTES, QC_FLAGS, zh

CJK = re.compile(r"[\u4e00-\u9fff]")


def test_every_kit_analyte_has_a_chinese_name() -> None:
    analytes = {line.analyte for spec in DEMO_KITS.values() for line in spec.lines} | {ENZYME_ANALYTE}
    missing = sorted(a for a in analytes if a not in ANALYTES)
    assert not missing, f"analytes without a name in kuaijian_schema.labels: {missing}"
    for code in analytes:
        assert CJK.search(ANALYTES[code][0]), code
    assert zh("imidacloprid") == "吡虫啉"
    assert zh("cholinesterase-inhibitors") == "有机磷和氨基甲酸酯类农药"
    assert zh("毒死蜱") == "毒死蜱"  # unknown codes show as they are


def test_every_qc_flag_has_a_chinese_name() -> None:
    flags = set(flag_names(GoldFlag, sum(int(f) for f in GoldFlag)))
    flags |= set(flag_names(EnzymeFlag, sum(int(f) for f in EnzymeFlag)))
    flags |= {"no-sample-id"}
    missing = sorted(f for f in flags if f not in QC_FLAGS)
    assert not missing, f"QC flags without a name: {missing}"
    assert all(CJK.search(QC_FLAGS[f][0]) for f in flags)
