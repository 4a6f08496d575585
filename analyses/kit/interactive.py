"""Interactive figures for the report: Bokeh plots a reader can hover (each point names its run) and zoom.

A stage's :class:`analyses.kit.stage.Figure` may declare ``interactive(con)`` beside ``draw(con)``. It
reads the same rows and returns an :class:`InteractiveFigure`, or None when there is nothing to plot
(the report then shows the still figure, which says why); the report embeds its layout in place of
the still image, with Bokeh's JavaScript inlined once, so the page still opens offline. ``pipeline
figures`` keeps writing ``draw``'s PNG and PDF.

Text from the database reaches Bokeh only as data: hover fields, which Bokeh HTML-escapes, and legend
entries, drawn as plain text on the canvas. Titles and axis labels are the stage's own words, since
Bokeh would read a ``$$...$$`` in them as TeX.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl
from bokeh.layouts import row
from bokeh.models import ColumnDataSource, HoverTool, LayoutDOM
from bokeh.palettes import Category10, Category20
from bokeh.plotting import figure
from bokeh.transform import factor_cmap, factor_mark

#: Every panel's tools: pan, zoom by wheel and by box, reset, and save as PNG (in the browser).
TOOLS = "pan,wheel_zoom,box_zoom,reset,save"
#: Markers by task, as the still figures draw them.
TASK_MARKERS = {"classification": "circle", "regression": "triangle"}


@dataclass(frozen=True)
class InteractiveFigure:
    """A Bokeh layout and the title the report shows above it (the still figure's suptitle)."""

    title: str
    layout: LayoutDOM


def palette(n: int) -> list[str]:
    """``n`` categorical colours: Category10 up to 10, Category20 up to 20, then Category20 repeated."""
    if n <= 10:
        return list(Category10[10][:max(n, 1)])
    base = list(Category20[20])
    return (base * (n // 20 + 1))[:n]


def panel(title: str, x_label: str, y_label: str, height: int = 430) -> figure:
    """One plot with the shared tools, no logo, stretched to the page's width."""
    p = figure(title=title, x_axis_label=x_label, y_axis_label=y_label, tools=TOOLS, height=height,
               sizing_mode="stretch_width", active_scroll=None)
    p.toolbar.logo = None
    p.title.text_font_size = "10pt"
    return p


def hover(renderers: list, fields: Sequence[tuple[str, ...]]) -> HoverTool:
    """A hover tool over ``renderers`` listing ``(label, column[, format])`` fields (a Bokeh number format
    such as ``"{0.000}"``); Bokeh escapes the values."""
    return HoverTool(renderers=renderers,
                     tooltips=[(f[0], "@{" + f[1] + "}" + (f[2] if len(f) > 2 else "")) for f in fields])


def source(frame: pl.DataFrame, columns: Sequence[str]) -> ColumnDataSource:
    """The named columns as a Bokeh data source (strings as strings, nulls as NaN or empty)."""
    data = {}
    for c in dict.fromkeys(columns):
        s = frame[c]
        data[c] = (s.fill_null("").to_list() if s.dtype == pl.Utf8
                   else s.cast(pl.Float64).fill_null(float("nan")).to_list())
    return ColumnDataSource(data)


def categorical_scatter(p: figure, frame: pl.DataFrame, x: str, y: str, by: str,
                        fields: Sequence[tuple], marker_by: str | None = None, size: int = 7,
                        factors: Sequence[str] | None = None):
    """Points of ``frame`` coloured by the categories of ``by`` (a legend entry each, click to hide) and,
    with ``marker_by`` = ``task``, shaped by task; hovering a point lists ``fields``. Pass the same
    ``factors`` to panels that should colour a category alike."""
    factors = list(factors) if factors is not None else sorted(set(frame[by].to_list()))
    columns = [x, y, by] + ([marker_by] if marker_by else []) + [f[1] for f in fields]
    kwargs = {}
    if marker_by:
        kwargs["marker"] = factor_mark(marker_by, list(TASK_MARKERS.values()), list(TASK_MARKERS))
    r = p.scatter(x, y, source=source(frame, columns), size=size, alpha=0.8, line_color=None,
                  color=factor_cmap(by, palette(len(factors)), factors), legend_field=by, **kwargs)
    p.add_tools(hover([r], fields))
    legend = p.legend[0]
    legend.click_policy = "hide"
    legend.label_text_font_size = "8pt"
    legend.title = by.replace("_", " ") + " (click to hide)"
    legend.title_text_font_size = "8pt"
    p.add_layout(legend, "right")
    return r


def side_by_side(*panels: figure) -> LayoutDOM:
    """Panels in one row that share the page's width."""
    return row(*panels, sizing_mode="stretch_width")
