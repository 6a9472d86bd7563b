"""Vietnamese text pools of the e-office stand-in: issuing organs, document types by frequency, subjects."""

from __future__ import annotations

from dataclasses import dataclass


def _table(text: str) -> tuple[tuple[str, int], ...]:
    """``"a:3|b:1"`` -> ``(("a", 3), ("b", 1))``: value and relative weight."""
    pairs = (item.rsplit(":", 1) for item in text.split("|"))
    return tuple((value, int(weight)) for value, weight in pairs)


@dataclass(frozen=True, slots=True)
class Issuer:
    name: str
    organ_id: str
    symbol: str
    unit_symbols: tuple[str, ...]


ISSUERS: tuple[Issuer, ...] = (
    Issuer("UBND tỉnh Lào Cai", "000.00.00.H37", "UBND", ("TH", "KT", "VX", "NC", "XDCB")),
    Issuer("Văn phòng UBND tỉnh Lào Cai", "000.00.01.H37", "VPUBND", ("TH", "KT", "HCTC")),
    Issuer("Sở Nội vụ tỉnh Lào Cai", "000.00.03.H37", "SNV", ("CCVC", "TCBM", "CCHC")),
    Issuer("Sở Tài chính tỉnh Lào Cai", "000.00.05.H37", "STC", ("BCTC", "QLNS", "TCĐT")),
    Issuer("Sở Nông nghiệp và Môi trường tỉnh Lào Cai", "000.00.07.H37", "SNNMT", ("QLĐĐ", "KHTC")),
    Issuer("Sở Xây dựng tỉnh Lào Cai", "000.00.08.H37", "SXD", ("QLXD", "QHKT")),
    Issuer("Sở Khoa học và Công nghệ tỉnh Lào Cai", "000.00.12.H37", "SKHCN", ("VP", "QLKH", "QLCN")),
    Issuer("Công an tỉnh Lào Cai", "000.00.40.H37", "CAT", ("PV01", "PC06")),
    Issuer("Bộ Khoa học và Công nghệ", "000.00.00.G22", "BKHCN", ("KHTC", "PC", "CĐSQG")),
    Issuer("Bộ Nội vụ", "000.00.00.G09", "BNV", ("CCVC", "TCBC")),
    Issuer("UBND xã Cốc San", "000.20.31.H37", "UBND", ("VP", "KT")),
)

INCOMING_TYPES = _table(
    "Công văn:50|Quyết định:9|Kế hoạch:8|Thông báo:8|Giấy mời:9|Báo cáo:4|Hướng dẫn:4|Chỉ thị:2|Công điện:2"
    "|Tờ trình:2|Chương trình:1|Nghị quyết:1"
)
OUTGOING_TYPES = _table(
    "Công văn:50|Báo cáo:12|Tờ trình:10|Kế hoạch:8|Quyết định:8|Thông báo:5|Giấy mời:5|Biên bản:1|Phương án:1"
)
TOPICS: tuple[str, ...] = (
    "chuyển đổi số trong cơ quan nhà nước",
    "cải cách hành chính năm 2026",
    "thực hiện Đề án 06 của Chính phủ",
    "phòng, chống thiên tai và tìm kiếm cứu nạn",
    "xây dựng nông thôn mới",
    "quản lý nhiệm vụ khoa học và công nghệ cấp tỉnh",
    "đánh giá, xếp loại công chức theo Nghị định 335/2025/NĐ-CP",
    "thực hiện dự toán ngân sách nhà nước",
    "vận hành chính quyền địa phương hai cấp",
    "bảo đảm an toàn thông tin mạng",
    "giải quyết thủ tục hành chính trên Cổng dịch vụ công",
    "phát triển kinh tế tập thể, hợp tác xã",
    "quản lý đất đai và khoáng sản",
    "phòng cháy, chữa cháy và cứu nạn, cứu hộ",
    "bảo hộ quyền sở hữu trí tuệ cho sản phẩm OCOP",
    "tiêu chuẩn, đo lường, chất lượng",
    "ứng dụng tiến bộ kỹ thuật trong sản xuất chè",
    "Chương trình mục tiêu quốc gia giảm nghèo bền vững",
    "công tác văn thư, lưu trữ",
    "công tác thi đua, khen thưởng",
    "phòng, chống tham nhũng, tiêu cực",
    "rà soát văn bản quy phạm pháp luật",
    "thực hiện Nghị quyết 57-NQ/TW về khoa học, công nghệ, đổi mới sáng tạo",
    "giải ngân vốn đầu tư công",
    "khắc phục hậu quả mưa lũ",
    "chuẩn bị Đại hội thi đua yêu nước",
)

SUBJECTS: dict[str, tuple[str, ...]] = {
    "Công văn": (
        "V/v {t}",
        "V/v đề nghị báo cáo kết quả {t}",
        "V/v góp ý dự thảo văn bản về {t}",
        "V/v cung cấp thông tin, số liệu về {t}",
        "V/v triển khai thực hiện {t}",
    ),
    "Quyết định": ("Về việc phê duyệt kế hoạch {t}", "Về việc thành lập Tổ công tác {t}", "Về việc giao chỉ tiêu {t}"),
    "Kế hoạch": ("Triển khai {t} năm 2026", "Kiểm tra {t} quý IV năm 2026"),
    "Thông báo": ("Kết luận của lãnh đạo UBND tỉnh tại buổi làm việc về {t}", "Về việc {t}"),
    "Giấy mời": ("Mời dự hội nghị về {t}", "Mời dự họp bàn về {t}"),
    "Báo cáo": ("Kết quả {t} 9 tháng đầu năm 2026", "Tình hình {t} tháng 10 năm 2026"),
    "Hướng dẫn": ("Hướng dẫn thực hiện {t}",),
    "Chỉ thị": ("Về việc tăng cường {t}",),
    "Công điện": ("Về việc chủ động ứng phó với mưa lũ, sạt lở đất",),
    "Tờ trình": ("Đề nghị phê duyệt kinh phí {t}", "Đề nghị ban hành quy chế về {t}"),
    "Chương trình": ("Chương trình công tác về {t}",),
    "Nghị quyết": ("Về {t}",),
    "Biên bản": ("Biên bản kiểm tra {t}",),
    "Phương án": ("Phương án {t}",),
}
TASK_NAMES: tuple[str, ...] = (
    "Tham mưu {t}",
    "Xây dựng báo cáo {t}",
    "Rà soát, tổng hợp số liệu về {t}",
    "Chuẩn bị nội dung họp về {t}",
    "Theo dõi, đôn đốc {t}",
)
ASSIGN_NOTES: tuple[str, ...] = (
    "Giao phòng chủ trì tham mưu",
    "Đề nghị nghiên cứu, tham mưu văn bản trả lời",
    "Chủ trì, phối hợp các phòng liên quan xử lý",
)
RETURN_NOTES: tuple[str, ...] = (
    "Đề nghị chỉnh sửa theo ý kiến góp ý",
    "Bổ sung số liệu, căn cứ pháp lý",
    "Chưa đúng thể thức theo Nghị định 30/2020/NĐ-CP",
    "Làm rõ trách nhiệm các đơn vị phối hợp",
)
URGENCY_WEIGHTS = _table("thường:80|khẩn:12|thượng khẩn:5|hỏa tốc:3")
