"""Issue 11, the last views: the overview lists every feed with its state and price, its chart has an instrument
selector (?instrument=<id>: that instrument's candles, markers and signals), and the targets page filters its
ghosts by instrument. Bad or unknown ids fall back to everything (a hand-edited URL is not worth an error page)."""

from datetime import UTC, datetime, timedelta

import pytest

from tests.factories import make_candles, make_feed, make_ghost, make_instrument, make_signal

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


@pytest.fixture
def two(desk):
    eth = make_instrument(symbol="ETH/USDT")
    make_feed(instrument=desk["instrument"], state="connected", last_price="65000")
    make_feed(instrument=eth, state="reconnecting", last_price="3123.5")
    eth_ghost = make_ghost(name="fader-eth", instrument=eth)
    return {
        "btc": desk["instrument"],
        "eth": eth,
        "btc_signal": make_signal(ghost=desk["ghost"], bar_time=T0, reason="btc spike"),
        "eth_signal": make_signal(ghost=eth_ghost, bar_time=T0 + timedelta(minutes=1), reason="eth spike"),
        "eth_ghost": eth_ghost,
    }


def _chart_symbol(html: str) -> str:
    data = html[html.index('id="chart-data"'):]
    return data[: data.index("</script>")]


@pytest.mark.django_db
def test_overview_lists_every_feed_with_state_and_price(viewer_client, two):
    html = viewer_client.get("/").content.decode()
    for inst, state, price in ((two["btc"], "connected", "65,000"), (two["eth"], "reconnecting", "3,123.5")):
        card = html[html.index(f'data-feed-id="{inst.pk}"'):]
        card = card[: card.index('class="feed-error')]
        assert inst.symbol in card and state in card and price in card, card


@pytest.mark.django_db
def test_overview_selector_switches_chart_and_signals(viewer_client, two):
    html = viewer_client.get("/").content.decode()
    assert 'id="chart-instrument"' in html and f'<option value="{two["eth"].pk}"' in html
    assert '"symbol": "BTC/USDT"' in _chart_symbol(html)  # the first instrument by default
    assert f'id="signal-{two["btc_signal"].pk}"' in html and f'id="signal-{two["eth_signal"].pk}"' in html

    html = viewer_client.get(f"/?instrument={two['eth'].pk}").content.decode()
    assert '"symbol": "ETH/USDT"' in _chart_symbol(html)
    assert f'<option value="{two["eth"].pk}" selected>' in html
    assert f'id="signal-{two["eth_signal"].pk}"' in html and f'id="signal-{two["btc_signal"].pk}"' not in html
    assert f'data-instrument-id="{two["eth"].pk}"' in html  # desk.js drops other instruments' live signals


@pytest.mark.django_db
@pytest.mark.parametrize("bad", ["999999", "abc", "-1", "1e3", "٣", ""])
def test_overview_bad_instrument_shows_everything(viewer_client, two, bad):
    response = viewer_client.get("/?instrument=" + bad)
    assert response.status_code == 200
    html = response.content.decode()
    assert '"symbol": "BTC/USDT"' in _chart_symbol(html)
    assert f'id="signal-{two["eth_signal"].pk}"' in html and f'id="signal-{two["btc_signal"].pk}"' in html


@pytest.mark.django_db
def test_overview_chart_candles_are_the_chosen_instruments(viewer_client, two):
    make_candles(instrument=two["eth"], start=T0, n=5, first=3.0)  # prices near 3: none of BTC's near 65,000
    eth = _chart_symbol(viewer_client.get(f"/?instrument={two['eth'].pk}").content.decode())
    assert '"close": [3.' in eth
    btc = _chart_symbol(viewer_client.get("/").content.decode())
    assert '"close": []' in btc


@pytest.mark.django_db
def test_overview_queries_do_not_grow_with_instruments(viewer_client, two, django_assert_max_num_queries):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as few:
        viewer_client.get(f"/?instrument={two['eth'].pk}")
    for n in range(8):
        inst = make_instrument(symbol=f"X{n}/USDT")
        make_feed(instrument=inst)
        make_ghost(name=f"g{n}", instrument=inst)
    with django_assert_max_num_queries(len(few.captured_queries)):
        viewer_client.get(f"/?instrument={two['eth'].pk}")


@pytest.mark.django_db
def test_targets_filter_by_instrument(op_client, two, desk):
    html = op_client.get("/targets/").content.decode()
    assert 'id="target-portfolio"' in html and f'id="target-{desk["ghost"].pk}"' in html
    assert f'id="target-{two["eth_ghost"].pk}"' in html
    html = op_client.get(f"/targets/?instrument={two['eth'].pk}").content.decode()
    assert 'id="target-portfolio"' in html and f'id="target-{two["eth_ghost"].pk}"' in html
    assert f'id="target-{desk["ghost"].pk}"' not in html
    html = op_client.get("/targets/?instrument=nope").content.decode()
    assert f'id="target-{desk["ghost"].pk}"' in html


@pytest.mark.django_db
def test_state_json_bars_of_the_asked_instrument_only(viewer_client, two):
    """desk.js asks the catch-up for its chart's instrument (or none): one candle query whatever the count."""
    make_candles(instrument=two["btc"], start=T0, n=3)
    make_candles(instrument=two["eth"], start=T0, n=4, first=3.0)

    def bars(query: str) -> dict[int, int]:
        events = viewer_client.get("/state.json" + query).json()["events"]
        out: dict[int, int] = {}
        for e in events:
            if e["type"] == "bar.closed":
                out[e["instrument_id"]] = out.get(e["instrument_id"], 0) + 1
        return out

    assert bars("") == {two["btc"].pk: 3, two["eth"].pk: 4}  # no parameter: every instrument, as before
    assert bars(f"?instrument={two['eth'].pk}") == {two["eth"].pk: 4}
    assert bars("?instrument=none") == {}
    assert bars("?instrument=abc") == {two["btc"].pk: 3, two["eth"].pk: 4}


@pytest.mark.django_db
def test_state_json_for_one_instrument_does_not_grow_with_instruments(viewer_client, two,
                                                                      django_assert_max_num_queries):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    url = f"/state.json?instrument={two['eth'].pk}"
    with CaptureQueriesContext(connection) as few:
        viewer_client.get(url)
    for n in range(8):
        make_feed(instrument=make_instrument(symbol=f"X{n}/USDT"))
    with django_assert_max_num_queries(len(few.captured_queries)):
        viewer_client.get(url)
