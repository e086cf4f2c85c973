"""Generate `sample_orders.xlsx`: ~200 made-up orders for the pipeline templates and the Data Center.

Columns: order_id, customer, region, amount, date (a real Excel date), comment (free text in Chinese
or English). A few rows are deliberately untidy, as real sheets are: refunds (negative amounts), a
missing amount, an empty comment, a missing region. The output is deterministic (fixed seed), so
re-running this script reproduces the committed file's contents.

    .venv/bin/python data/templates/make_sample.py
"""
from __future__ import annotations

import random
from datetime import date, timedelta
from pathlib import Path

from openpyxl import Workbook
from openpyxl.styles import Font

OUT = Path(__file__).resolve().parent / "sample_orders.xlsx"
ROWS = 200

CUSTOMERS = ["上海明远贸易", "杭州青禾科技", "北京星河文化", "深圳海蓝电子", "成都锦城餐饮", "广州南风服饰",
             "Acme Trading", "Blue Harbor Ltd", "Northwind Foods", "Contoso Retail", "武汉江城物流", "苏州园林家居"]
REGIONS = ["华东", "华北", "华南", "西南", "华中"]
COMMENTS_ZH = ["发货很快，包装完好。", "有一箱破损，希望尽快补发。", "客服回复及时，满意。", "价格偏高，下次考虑其他供应商。",
               "到货比承诺晚了三天，影响了我们的排期。", "质量稳定，会继续合作。", "发票抬头开错了，请重新开具。",
               "希望增加周末配送。", "数量少了两件，已拍照反馈。", "整体不错，物流信息更新有点慢。"]
COMMENTS_EN = ["Fast delivery, well packed.", "One carton arrived damaged, please resend.",
               "Great support team, very responsive.", "Too expensive compared to last quarter.",
               "Delivered three days late, which delayed our launch.", "Consistent quality, will reorder.",
               "Invoice had the wrong company name.", "Please offer weekend delivery.",
               "Two items were missing from the box.", "Good overall, but tracking updates were slow."]


def rows(seed: int = 20250101) -> list[list]:
    rng = random.Random(seed)
    start = date(2025, 1, 1)
    out = []
    for i in range(1, ROWS + 1):
        customer = rng.choice(CUSTOMERS)
        english = customer.isascii()
        comment = rng.choice(COMMENTS_EN if english else COMMENTS_ZH)
        amount: float | None = round(rng.lognormvariate(7.2, 0.9), 2)
        region: str | None = rng.choice(REGIONS)
        if i % 37 == 0:
            amount = -round(amount / 3, 2)  # a refund
        if i % 61 == 0:
            amount = None  # left blank in the sheet
        if i % 53 == 0:
            comment = ""
        if i == 150:
            region = None
        out.append([f"SO-2025-{i:04d}", customer, region, amount, start + timedelta(days=rng.randrange(180)), comment])
    return out


def main() -> None:
    book = Workbook()
    sheet = book.active
    sheet.title = "orders"
    sheet.append(["order_id", "customer", "region", "amount", "date", "comment"])
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for row in rows():
        sheet.append(row)
    for cell in sheet["E"][1:]:
        cell.number_format = "yyyy-mm-dd"
    for column, width in zip("ABCDEF", (14, 20, 8, 12, 12, 48)):
        sheet.column_dimensions[column].width = width
    sheet.freeze_panes = "A2"
    book.save(OUT)
    print(f"wrote {OUT} ({ROWS} rows)")


if __name__ == "__main__":
    main()
