"""The trades page and its CSV export: filters, keyset pages (newer/older cursors, no count, no offset), the CSV
(values in index order, formula-safe, streamed in batches under WSGI and ASGI). Moved here from test_views.py
when the views moved to apps/dashboard/views_trades.py (issue 13)."""

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.test import AsyncClient

from apps.trading.trade_selectors import trade_cursor
from tests.factories import make_ghost, make_instrument, make_position

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def _ordered_ids(html: str) -> list[str]:
    return [part.split('"')[0] for part in html.split('id="trade-')[1:]]


@pytest.fixture
def ledger(desk):
    """Ghost A (fader-btc): a long win, a short loss, an open long. Ghost B: a long win a week later."""
    a = desk["ghost"]
    b = make_ghost(name="fader-two", instrument=desk["instrument"])
    return {
        "a": a,
        "b": b,
        "win": make_position(ghost=a, opened_at=T0, side="long", entry="100", exit="101", qty="2"),
        "loss": make_position(
            ghost=a,
            opened_at=T0 + timedelta(hours=1),
            side="short",
            entry="100",
            exit="101",
            exit_reason="stop",
        ),
        "open": make_position(ghost=a, opened_at=T0 + timedelta(hours=2), side="long", entry="102"),
        "later": make_position(
            ghost=b, opened_at=T0 + timedelta(days=7), side="long", entry="100", exit="103"
        ),
    }


def trade_ids(html: str) -> set[str]:
    return {part.split('"')[0] for part in html.split('id="trade-')[1:]}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", {"win", "loss", "open", "later"}),
        ("ghost={b}", {"later"}),
        ("side=short", {"loss"}),
        ("outcome=win", {"win", "later"}),
        ("outcome=loss", {"loss"}),
        ("outcome=open", {"open"}),
        ("date_from=2026-03-05", {"later"}),
        ("date_to=2026-03-02", {"win", "loss", "open"}),
        ("date_from=2026-03-02&date_to=2026-03-02&side=long", {"win", "open"}),
        ("ghost={a}&outcome=win", {"win"}),
    ],
)
def test_trades_filters(viewer_client, ledger, query, expected):
    query = query.format(a=ledger["a"].pk, b=ledger["b"].pk)
    response = viewer_client.get("/trades/?" + query)
    assert response.status_code == 200
    assert trade_ids(response.content.decode()) == {str(ledger[k].pk) for k in expected}


@pytest.mark.django_db
def test_trades_show_net_pnl_with_unit_and_exit_reason(viewer_client, ledger):
    html = viewer_client.get("/trades/").content.decode()
    win = ledger["win"]  # (101 - 100) * 2 - fees (0.2 + 0.202) = +1.598 -> "+1.60"
    assert win.net_pnl == Decimal("1.598")
    row = html[html.index(f'id="trade-{win.pk}"') :]
    row = row[: row.index("</tr>")]
    assert "+1.60" in row and "Target" in row and 'class="r num pos"' in row
    assert 'Net P&amp;L <span class="unit">USDT</span>' in html
    assert "net P&amp;L = (exit − entry) × qty × side − fees" in html  # the tooltip formula
    loss_row = html[html.index(f'id="trade-{ledger["loss"].pk}"') :]
    assert "−1.20" in loss_row[: loss_row.index("</tr>")]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("side=sideways", "side must be long or short"),
        ("outcome=maybe", "outcome must be win, loss or open"),
        ("ghost=999999", "no such ghost"),
        ("ghost=abc", "no such ghost"),
        ("instrument=999999", "no such instrument"),
        ("instrument=1.5", "no such instrument"),
        ("date_from=2026-13-45", "from: enter a date as YYYY-MM-DD"),
        ("date_to=yesterday", "to: enter a date as YYYY-MM-DD"),
        (
            "date_from=2026-03-05&date_to=2026-03-01",
            "the &#x27;from&#x27; date is after the &#x27;to&#x27; date",
        ),
    ],
)
def test_trades_invalid_filters_give_a_clear_message(viewer_client, ledger, query, message):
    response = viewer_client.get("/trades/?" + query)
    assert response.status_code == 400
    html = response.content.decode()
    assert "These filters could not be used" in html and message in html
    assert not trade_ids(html)
    csv_response = viewer_client.get("/trades.csv?" + query)
    assert csv_response.status_code == 400
    assert csv_response.content.decode().startswith("invalid filter: ")


@pytest.mark.django_db
def test_trades_and_csv_filter_by_instrument(viewer_client, ledger):
    """issue 11: a second instrument's trades show under its filter only, on the page and in the CSV."""
    eth = make_instrument(symbol="ETH/USDT")
    eth_trade = make_position(ghost=make_ghost(name="fader-eth", instrument=eth), opened_at=T0 + timedelta(hours=3),
                              entry="3000", exit="3010")
    btc = ledger["a"].instrument_id
    only_eth = trade_ids(viewer_client.get(f"/trades/?instrument={eth.pk}").content.decode())
    assert only_eth == {str(eth_trade.pk)}
    only_btc = trade_ids(viewer_client.get(f"/trades/?instrument={btc}").content.decode())
    assert only_btc == {str(ledger[k].pk) for k in ("win", "loss", "open", "later")}
    body = b"".join(viewer_client.get(f"/trades.csv?instrument={eth.pk}").streaming_content).decode()
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [(r["id"], r["symbol"]) for r in rows] == [(str(eth_trade.pk), "ETH/USDT")]
    html = viewer_client.get(f"/trades/?instrument={eth.pk}").content.decode()
    assert f'href="/trades.csv?instrument={eth.pk}"' in html  # the export link keeps the filter


def _link(html: str, rel: str) -> str | None:
    """The href of the pager's rel=prev/next/first link, unescaped, or None."""
    marker = f'rel="{rel}"'
    if marker not in html:
        return None
    head = html[: html.index(marker)]
    return head[head.rindex('href="') + 6 :].split('"')[0].replace("&amp;", "&")


@pytest.mark.django_db
def test_trades_keyset_pages_walk_every_row_once_both_ways(viewer_client, desk):
    """120 trades, 40 of them sharing one opened_at (ties broken by id): older links walk 50/50/20 without a
    gap or a repeat, newer links walk back to the same pages, and no page counts the table."""
    ghost = desk["ghost"]
    made = [make_position(ghost=ghost, opened_at=T0 + timedelta(minutes=10 * i), entry="100", exit="100.5")
            for i in range(80)]
    made += [make_position(ghost=ghost, opened_at=T0 - timedelta(hours=1), entry="100", exit="99")
             for _ in range(40)]
    expected = [str(p.pk) for p in sorted(made, key=lambda p: (p.opened_at, p.pk), reverse=True)]
    pages, url = [], "/trades/"
    while url:
        html = viewer_client.get(url).content.decode()
        pages.append((url, html))
        url = _link(html, "next") and "/trades/" + _link(html, "next")
    ids = [i for _, html in pages for i in _ordered_ids(html)]
    assert [len(_ordered_ids(h)) for _, h in pages] == [50, 50, 20]
    assert ids == expected  # newest first, every row exactly once, ties on opened_at in id order
    assert "rows" in pages[0][1] and " of " not in pages[0][1].split('class="pager"')[1].split("</nav>")[0]
    assert _link(pages[0][1], "prev") is None and _link(pages[0][1], "first") is None
    # Newer from the last page gives the middle page again, and from the middle page the first.
    back = viewer_client.get("/trades/" + _link(pages[2][1], "prev")).content.decode()
    assert _ordered_ids(back) == _ordered_ids(pages[1][1])
    top = viewer_client.get("/trades/" + _link(back, "prev")).content.decode()
    assert _ordered_ids(top) == _ordered_ids(pages[0][1]) and _link(top, "prev") is None
    assert _link(pages[2][1], "first") == "?"


@pytest.mark.django_db
def test_trades_keyset_links_keep_the_filters(viewer_client, desk):
    ghost = desk["ghost"]
    made = [make_position(ghost=ghost, opened_at=T0 + timedelta(minutes=i), side="long" if i % 2 else "short",
                          entry="100", exit="101") for i in range(120)]
    longs = [str(p.pk) for p in reversed(made) if p.side == "long"]
    first = viewer_client.get("/trades/?side=long").content.decode()
    older = _link(first, "next")
    assert older.startswith("?side=long&before=")
    second = viewer_client.get("/trades/" + older).content.decode()
    assert _ordered_ids(first) + _ordered_ids(second) == longs  # 50 + 10, every one a long
    assert _link(second, "next") is None
    assert _link(second, "prev").startswith("?side=long&after=")
    # The CSV link carries the filters but never the cursor.
    csv_href = second.split('id="csv-link" href="')[1].split('"')[0].replace("&amp;", "&")
    assert csv_href == "/trades.csv?side=long"


@pytest.mark.django_db
@pytest.mark.parametrize("cursor", ["abc", "1_", "_5", "99999999999999999999999_1", "-5_3", "1772443800000000_0",
                                    "²_1", "1" * 60, "1772443800000000_1_2"])
def test_trades_bad_cursors_show_the_newest_page(viewer_client, desk, cursor):
    for i in range(55):
        make_position(ghost=desk["ghost"], opened_at=T0 + timedelta(minutes=i), entry="100", exit="100.5")
    newest = _ordered_ids(viewer_client.get("/trades/").content.decode())
    for key in ("before", "after"):
        response = viewer_client.get(f"/trades/?{key}={cursor}")
        assert response.status_code == 200 and _ordered_ids(response.content.decode()) == newest


@pytest.mark.django_db
def test_trades_cursor_past_the_end_says_so(viewer_client, desk):
    p = make_position(ghost=desk["ghost"], opened_at=T0, entry="100", exit="100.5")
    html = viewer_client.get(f"/trades/?before={trade_cursor(p).token}").content.decode()
    assert "No older trades" in html and not _ordered_ids(html)
    # A newer cursor within a page of the top shows the full newest page, not a short one.
    html = viewer_client.get(f"/trades/?after={trade_cursor(p).token}").content.decode()
    assert _ordered_ids(html) == [str(p.pk)]


@pytest.mark.django_db
def test_trades_empty_states(viewer_client, desk):
    assert (
        "No trades yet: enable a ghost or start the sim feed"
        in viewer_client.get("/trades/").content.decode()
    )
    assert "No trades match these filters" in viewer_client.get("/trades/?side=short").content.decode()


def read_csv(response) -> list[list[str]]:
    body = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(body)))


@pytest.mark.django_db
def test_trades_csv_export(viewer_client, ledger):
    response = viewer_client.get("/trades.csv")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert 'filename="trades.csv"' in response["Content-Disposition"]
    rows = read_csv(response)
    header, body = rows[0], rows[1:]
    assert header[:3] == ["id", "opened_at", "closed_at"] and "net_pnl" in header
    assert len(body) == 4
    by_id = {r[0]: dict(zip(header, r, strict=True)) for r in body}
    win = by_id[str(ledger["win"].pk)]
    assert Decimal(win["net_pnl"]) == Decimal("1.598") and win["exit_reason"] == "target"
    assert Decimal(win["fees"]) == Decimal("0.402") and win["currency"] == "USDT"
    assert "e" not in win["net_pnl"].lower()  # Decimal strings, never floats in scientific notation
    opened = by_id[str(ledger["open"].pk)]
    assert opened["status"] == "open" and opened["net_pnl"] == "" and opened["exit_price"] == ""
    only_wins = read_csv(viewer_client.get("/trades.csv?outcome=win"))[1:]
    assert {r[0] for r in only_wins} == {str(ledger["win"].pk), str(ledger["later"].pk)}


@pytest.mark.django_db
def test_trades_csv_neutralises_formulas_and_streams_in_batches(viewer_client, desk, monkeypatch):
    from apps.dashboard import views_trades

    monkeypatch.setattr(views_trades, "CSV_BATCH", 7)  # several keyset batches over rows sharing timestamps
    evil = make_ghost(name="=HYPERLINK(1)", instrument=desk["instrument"])
    for i in range(30):
        make_position(ghost=evil, opened_at=T0 + timedelta(minutes=i // 3), entry="100", exit="99")
    rows = read_csv(viewer_client.get("/trades.csv"))[1:]
    assert len(rows) == 30 and len({r[0] for r in rows}) == 30
    assert all(r[3] == "'=HYPERLINK(1)" for r in rows)


@pytest.mark.django_db(transaction=True)
async def test_trades_csv_streams_under_asgi(make_user, desk):
    """Under ASGI the export is pulled one batch at a time (an async iterator), not read whole."""
    from asgiref.sync import sync_to_async

    user = await sync_to_async(make_user)("vera", "viewer")
    await sync_to_async(make_position)(ghost=desk["ghost"], opened_at=T0, entry="100", exit="101")
    client = AsyncClient()
    await client.aforce_login(user)
    response = await client.get("/trades.csv")
    assert response.status_code == 200 and response.is_async
    body = b"".join([chunk async for chunk in response.streaming_content]).decode()
    assert body.splitlines()[0].startswith("id,opened_at") and len(body.splitlines()) == 2


@pytest.mark.postgres  # the cursor hands back floats and naive times on SQLite, Decimals and aware times there
@pytest.mark.django_db
def test_trades_csv_cells_equal_the_orm_values(viewer_client, desk):
    """The export reads plain cursor rows (no Django converters, for speed): every cell still equals what the ORM
    reads, decimals are plain digits with the field's places (no 1E-8, no 0E-8) and times are UTC ISO 8601."""
    from apps.trading.models import Position

    ghost = desk["ghost"]
    make_position(ghost=ghost, opened_at=T0 + timedelta(microseconds=123456), entry="0.00001234", exit="0.00001234",
                  qty="123456.000000000001")  # a flat trade: gross 0
    make_position(ghost=ghost, opened_at=T0 + timedelta(minutes=1), side="short", entry="98765.4321098765",
                  exit="99999.99", qty="0.000001")
    make_position(ghost=ghost, opened_at=T0 + timedelta(minutes=2), entry="100", qty="3")  # open
    rows = read_csv(viewer_client.get("/trades.csv"))
    header, body = rows[0], rows[1:]
    assert len(body) == 3
    for row in body:
        cell = dict(zip(header, row, strict=True))
        p = Position.objects.get(pk=int(cell["id"]))
        assert cell["opened_at"] == p.opened_at.isoformat()
        assert cell["closed_at"] == (p.closed_at.isoformat() if p.closed_at else "")
        for name in ("quantity", "entry_price", "exit_price", "gross_pnl", "fees", "net_pnl"):
            value = p.net_pnl if name == "net_pnl" else getattr(p, name)
            if value is None:
                assert cell[name] == ""
            else:
                assert "e" not in cell[name].lower() and Decimal(cell[name]) == value, (name, cell[name], value)
    flat = dict(zip(header, body[2], strict=True))
    assert flat["gross_pnl"] == "0.00000000" and flat["opened_at"].endswith(".123456+00:00")


@pytest.mark.django_db
def test_trades_csv_quotes_names_with_commas_quotes_and_line_breaks(viewer_client, desk):
    """Lines are joined by hand for speed; the free text in them (names, symbols, reasons) still parses back."""
    from apps.trading.models import Position

    odd = make_ghost(name='fade, "the"\nspike', instrument=desk["instrument"])
    p = make_position(ghost=odd, opened_at=T0, entry="100", exit="99", exit_reason="stop")
    Position.objects.filter(pk=p.pk).update(exit_reason='odd, "reason"')  # no CHECK on choices in the table
    rows = read_csv(viewer_client.get("/trades.csv"))
    header, body = rows[0], rows[1:]
    assert len(body) == 1 and len(body[0]) == len(header) == 15
    cell = dict(zip(header, body[0], strict=True))
    assert cell["ghost"] == 'fade, "the"\nspike' and cell["exit_reason"] == 'odd, "reason"'
    assert cell["symbol"] == "BTC/USDT" and cell["currency"] == "USDT"
