"""The stage graph of a run as boxes and arrows to draw in SVG (layers left to right)."""

from __future__ import annotations

from dataclasses import dataclass

from iacorch.model.plan import Plan

BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 150, 38, 46, 14, 8


@dataclass(frozen=True, slots=True)
class Box:
    id: str
    x: int
    y: int
    status: str
    gate: bool


@dataclass(frozen=True, slots=True)
class Arrow:
    x1: int
    y1: int
    x2: int
    y2: int


@dataclass(frozen=True, slots=True)
class Drawing:
    width: int
    height: int
    boxes: tuple[Box, ...]
    arrows: tuple[Arrow, ...]


def layout(plan: Plan, statuses: dict[str, str]) -> Drawing:
    """One column per layer of the plan, one box per stage, an arrow per need."""
    boxes: dict[str, Box] = {}
    for column, layer in enumerate(plan.layers):
        for row, stage_id in enumerate(layer):
            boxes[stage_id] = Box(stage_id, MARGIN + column * (BOX_W + GAP_X),
                                  MARGIN + row * (BOX_H + GAP_Y),
                                  statuses.get(stage_id, "pending"),
                                  plan.stages[stage_id].approval is not None)
    arrows = tuple(Arrow(boxes[need].x + BOX_W, boxes[need].y + BOX_H // 2,
                         boxes[stage.id].x, boxes[stage.id].y + BOX_H // 2)
                   for stage in plan.stages.values() for need in stage.needs
                   if need in boxes and stage.id in boxes)
    rows = max((len(layer) for layer in plan.layers), default=1)
    return Drawing(width=2 * MARGIN + len(plan.layers) * (BOX_W + GAP_X) - GAP_X,
                   height=2 * MARGIN + rows * (BOX_H + GAP_Y) - GAP_Y,
                   boxes=tuple(boxes.values()), arrows=arrows)
