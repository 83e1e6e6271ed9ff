"""Chinese (first) and English names of the codes that travel on the wire: analytes of the kit tables and the
enzyme method, and QC flags. One table for the dashboard (served by the cloud at GET /api/labels), reports and
exports.

Does: map a code to (中文, English); `zh(code)` for one name, falling back to the code itself for anything
not in the table (a kit pushed with a new analyte still shows, by its code); `fault_text(exc)` for the reason an
instrument is unavailable or in error, Chinese first with the technical detail after it.

Does not: decide verdicts or flags (gateway.interpret) or translate UI wording (cloud/static/app.js).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

ANALYTES: Final = MappingProxyType(
    {
        "imidacloprid": ("吡虫啉", "imidacloprid"),
        "carbendazim": ("多菌灵", "carbendazim"),
        "carbofuran": ("克百威", "carbofuran"),
        "procymidone": ("腐霉利", "procymidone"),
        "AOZ": ("硝基呋喃代谢物 AOZ（呋喃唑酮）", "nitrofuran metabolite AOZ (furazolidone)"),
        "AMOZ": ("硝基呋喃代谢物 AMOZ（呋喃它酮）", "nitrofuran metabolite AMOZ (furaltadone)"),
        "SEM": ("硝基呋喃代谢物 SEM（呋喃西林）", "nitrofuran metabolite SEM (nitrofurazone)"),
        "AHD": ("硝基呋喃代谢物 AHD（呋喃妥因）", "nitrofuran metabolite AHD (nitrofurantoin)"),
        "cholinesterase-inhibitors": (
            "有机磷和氨基甲酸酯类农药",
            "organophosphate and carbamate pesticides",
        ),
        "peanut-allergen": ("花生过敏原", "peanut allergen"),
    }
)
"""Analyte code (StripSpec TestLine.analyte, or the enzyme method's class) → (中文, English)."""

QC_FLAGS: Final = MappingProxyType(
    {
        "control_missing": ("质控线缺失", "control line missing"),
        "control_weak": ("质控信号过弱", "control signal weak"),
        "control_out_of_place": ("质控线位置异常", "control line out of place"),
        "saturated": ("信号饱和", "saturated"),
        "below_calibration": ("低于标定范围", "below calibration range"),
        "above_calibration": ("高于标定范围", "above calibration range"),
        "control_shape": ("质控线形状异常（疑似灰尘/污点）", "control line not line-shaped (dust speck?)"),
        "test_shape": (
            "检测线形状异常（疑似灰尘/污点），需复检",
            "test line not line-shaped (dust speck?), retest",
        ),
        "control_channel": ("对照通道", "control channel"),
        "control_falling": ("对照吸光度下降", "control absorbance falling"),
        "falling": ("吸光度下降", "absorbance falling"),
        "not_finite": ("数据异常（非数值）", "not a number"),
        "control_not_finite": ("对照数据异常（非数值）", "control not a number"),
        "no-sample-id": ("缺少样品编号", "no sample id"),
        "invalid": ("无效", "invalid"),
    }
)
"""QC flag wire name (gateway.interpret.codes.flag_names, gateway.pipeline) → (中文, English)."""


def zh(code: str) -> str:
    """The Chinese name of an analyte or QC flag code; the code itself if unknown."""
    names = ANALYTES.get(code) or QC_FLAGS.get(code)
    return names[0] if names else code


FAULTS: Final = MappingProxyType(
    {
        "DriverTimeout": ("仪器无应答（超时）", "no answer (timeout)"),
        "TransportError": ("与仪器的连接中断", "link to the analyzer failed"),
        "ChecksumError": ("数据校验错误", "checksum mismatch"),
        "FrameError": ("数据帧错误", "malformed frame"),
        "ModbusExceptionResponse": ("仪器返回异常代码", "analyzer answered an exception"),
        "UnexpectedReply": ("仪器应答不符", "unexpected reply"),
        "TornRead": ("读取期间仪器数据变化", "data changed while read"),
        "ProtocolError": ("通信协议错误", "protocol error"),
        "DeviceNotFound": ("未找到仪器", "analyzer not found"),
        "DriverConfigError": ("仪器配置错误", "instrument configuration error"),
        "DriverError": ("仪器驱动错误", "driver error"),
    }
)
"""Exception class name of the driver layer (drivers.errors) → (中文, English). Anything else (a bug) is
程序错误 with its class name."""


def fault_text(exc: BaseException) -> str:
    """'中文（Class: detail）' for an instrument fault: the Chinese name of the nearest known exception class in
    the exception's MRO, then the class and message for the technician who reports it."""
    name = next((c.__name__ for c in type(exc).__mro__ if c.__name__ in FAULTS), None)
    label = FAULTS[name][0] if name else "程序错误"
    return f"{label}（{type(exc).__name__}: {exc}）"
