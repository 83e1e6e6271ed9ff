"""Every analyte of the kit tables and the enzyme method, and every QC flag the gateway can send, has a
Chinese name (and an English one) in kuaijian_schema.labels."""

from __future__ import annotations

import re

from drivers import errors
from gateway.interpret.codes import EnzymeFlag, GoldFlag, flag_names
from gateway.pipeline import ENZYME_ANALYTE
from kuaijian_schema.kits import DEMO_KITS
from kuaijian_schema.labels import ANALYTES, FAULTS, QC_FLAGS, fault_text, zh

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


def test_every_driver_error_has_a_chinese_fault_name() -> None:
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.DriverError)]
    missing = sorted(c.__name__ for c in classes if c.__name__ not in FAULTS)
    assert not missing, f"driver errors without a Chinese fault name: {missing}"
    assert (
        fault_text(errors.DriverTimeout("no answer in 2.0 s"))
        == "仪器无应答（超时）（DriverTimeout: no answer in 2.0 s）"
    )
    assert fault_text(errors.ModbusExceptionResponse(3, 6)).startswith(
        "仪器返回异常代码（ModbusExceptionResponse: FC 0x03"
    )

    class VendorQuirk(
        errors.ProtocolError
    ):  # a subclass a driver might add: its nearest known parent names it
        pass

    assert fault_text(VendorQuirk("odd")) == "通信协议错误（VendorQuirk: odd）"
    assert fault_text(KeyError("x")).startswith("程序错误（KeyError")
