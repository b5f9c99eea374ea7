"""The business dashboard as code: one QuickSight definition, used by the analysis (where it is
edited) and the dashboard (what business users open), over the warehouse's tables by direct
query (no SPICE copy: the numbers are the warehouse's as they are loaded).

Sheet "Incidents": incidents per day by train, incidents by train and sensor, the incidents
open now, the time to close by sensor; sheet "Sensor trend": each sensor's hourly mean.

The definition is the QuickSight API's shape (botocore's `DashboardVersionDefinition`, which
CloudFormation's `Definition` property mirrors); tests/test_infra.py validates it against
botocore's model and cfn-lint checks the synthesized templates.
"""

from __future__ import annotations

from typing import Any

from sensorpipe.sinks.warehouse import INCIDENTS, MINUTE_AGGREGATES

# One row per incident: when it opened and closed, its severity at the close (or at the
# opening while it is open) and the minutes it took. Redshift SQL (DATEDIFF).
INCIDENT_LIFECYCLE_SQL = f"""
SELECT o.alert_id, o.device_id, o.sensor, o.opened_at, c.event_time AS closed_at,
       COALESCE(c.severity, o.severity) AS severity,
       CASE WHEN c.alert_id IS NULL THEN 'open' ELSE 'closed' END AS status,
       DATEDIFF(minute, o.opened_at, c.event_time) AS minutes_to_close
FROM {INCIDENTS.name} o
LEFT JOIN {INCIDENTS.name} c ON c.alert_id = o.alert_id AND c.action = 'close'
WHERE o.action = 'open'
""".strip()
INCIDENT_LIFECYCLE_COLUMNS = [
    ("alert_id", "STRING"), ("device_id", "STRING"), ("sensor", "STRING"),
    ("opened_at", "DATETIME"), ("closed_at", "DATETIME"), ("severity", "STRING"),
    ("status", "STRING"), ("minutes_to_close", "INTEGER"),
]  # fmt: skip

INCIDENTS_ID = "incidents"
TREND_ID = "minute_aggregates"
TREND_TABLE = MINUTE_AGGREGATES.name
INCIDENTS_SHEET, TREND_SHEET = "incidents", "sensor-trend"


def _column(data_set: str, name: str) -> dict[str, str]:
    return {"DataSetIdentifier": data_set, "ColumnName": name}


def _category(field: str, data_set: str, column: str) -> dict[str, Any]:
    return {"CategoricalDimensionField": {"FieldId": field, "Column": _column(data_set, column)}}


def _day(field: str, data_set: str, column: str, granularity: str = "DAY") -> dict[str, Any]:
    return {
        "DateDimensionField": {
            "FieldId": field,
            "Column": _column(data_set, column),
            "DateGranularity": granularity,
        }
    }


def _count(field: str, data_set: str, column: str) -> dict[str, Any]:
    return {
        "CategoricalMeasureField": {
            "FieldId": field,
            "Column": _column(data_set, column),
            "AggregationFunction": "DISTINCT_COUNT",
        }
    }


def _average(field: str, data_set: str, column: str) -> dict[str, Any]:
    return {
        "NumericalMeasureField": {
            "FieldId": field,
            "Column": _column(data_set, column),
            "AggregationFunction": {"SimpleNumericalAggregation": "AVERAGE"},
        }
    }


def _title(text: str) -> dict[str, Any]:
    return {"Visibility": "VISIBLE", "FormatText": {"PlainText": text}}


def _grid(visual_ids: list[str]) -> list[dict[str, Any]]:
    """Two visuals a row, each half the sheet's 36 columns wide."""
    return [
        {
            "Configuration": {
                "GridLayout": {
                    "Elements": [
                        {"ElementId": v, "ElementType": "VISUAL", "ColumnSpan": 18, "RowSpan": 12}
                        for v in visual_ids
                    ]
                }
            }
        }
    ]


def incidents_sheet() -> dict[str, Any]:
    visuals = [
        {
            "BarChartVisual": {
                "VisualId": "incidents-per-day",
                "Title": _title("Incidents per day, by train"),
                "ChartConfiguration": {
                    "FieldWells": {
                        "BarChartAggregatedFieldWells": {
                            "Category": [_day("day", INCIDENTS_ID, "opened_at")],
                            "Values": [_count("incidents", INCIDENTS_ID, "alert_id")],
                            "Colors": [_category("train", INCIDENTS_ID, "device_id")],
                        }
                    },
                    "BarsArrangement": "STACKED",
                },
            }
        },
        {
            "PivotTableVisual": {
                "VisualId": "incidents-by-train-and-sensor",
                "Title": _title("Incidents by train and sensor"),
                "ChartConfiguration": {
                    "FieldWells": {
                        "PivotTableAggregatedFieldWells": {
                            "Rows": [
                                _category("pivot-train", INCIDENTS_ID, "device_id"),
                                _category("pivot-sensor", INCIDENTS_ID, "sensor"),
                            ],
                            "Columns": [_category("pivot-severity", INCIDENTS_ID, "severity")],
                            "Values": [_count("pivot-incidents", INCIDENTS_ID, "alert_id")],
                        }
                    }
                },
            }
        },
        {
            "TableVisual": {
                "VisualId": "open-incidents",
                "Title": _title("Open incidents"),
                "ChartConfiguration": {
                    "FieldWells": {
                        "TableUnaggregatedFieldWells": {
                            "Values": [
                                {"FieldId": f"open-{c}", "Column": _column(INCIDENTS_ID, c)}
                                for c in ("device_id", "sensor", "severity", "opened_at")
                            ]
                        }
                    },
                    "SortConfiguration": {
                        "RowSort": [
                            {"FieldSort": {"FieldId": "open-opened_at", "Direction": "DESC"}}
                        ]
                    },
                },
            }
        },
        {
            "BarChartVisual": {
                "VisualId": "time-to-close",
                "Title": _title("Average minutes to close, by sensor"),
                "ChartConfiguration": {
                    "FieldWells": {
                        "BarChartAggregatedFieldWells": {
                            "Category": [_category("close-sensor", INCIDENTS_ID, "sensor")],
                            "Values": [
                                _average("minutes-to-close", INCIDENTS_ID, "minutes_to_close")
                            ],
                        }
                    },
                    "Orientation": "HORIZONTAL",
                },
            }
        },
    ]
    return {
        "SheetId": INCIDENTS_SHEET,
        "Name": "Incidents",
        "Visuals": visuals,
        "Layouts": _grid([next(iter(v.values()))["VisualId"] for v in visuals]),
    }


def trend_sheet() -> dict[str, Any]:
    visual = {
        "LineChartVisual": {
            "VisualId": "sensor-trend",
            "Title": _title("Hourly mean of each sensor"),
            "ChartConfiguration": {
                "FieldWells": {
                    "LineChartAggregatedFieldWells": {
                        "Category": [_day("hour", TREND_ID, "window_start", "HOUR")],
                        "Values": [_average("mean", TREND_ID, "mean_value")],
                        "Colors": [_category("trend-sensor", TREND_ID, "sensor")],
                    }
                }
            },
        }
    }
    return {
        "SheetId": TREND_SHEET,
        "Name": "Sensor trend",
        "Visuals": [visual],
        "FilterControls": [
            {
                "Dropdown": {
                    "FilterControlId": "trend-train-control",
                    "Title": "Train",
                    "SourceFilterId": "trend-train",
                    "Type": "SINGLE_SELECT",
                }
            }
        ],
        "Layouts": _grid(["sensor-trend"]),
    }


def dashboard_definition(incidents_arn: str, trend_arn: str) -> dict[str, Any]:
    """The analysis's and the dashboard's definition, over the two data sets' ARNs."""
    return {
        "DataSetIdentifierDeclarations": [
            {"Identifier": INCIDENTS_ID, "DataSetArn": incidents_arn},
            {"Identifier": TREND_ID, "DataSetArn": trend_arn},
        ],
        "Sheets": [incidents_sheet(), trend_sheet()],
        "FilterGroups": [
            {
                # "Open incidents" lists only those without a close.
                "FilterGroupId": "open-only",
                "Filters": [
                    {
                        "CategoryFilter": {
                            "FilterId": "status-open",
                            "Column": _column(INCIDENTS_ID, "status"),
                            "Configuration": {
                                "FilterListConfiguration": {
                                    "MatchOperator": "CONTAINS",
                                    "CategoryValues": ["open"],
                                }
                            },
                        }
                    }
                ],
                "ScopeConfiguration": {
                    "SelectedSheets": {
                        "SheetVisualScopingConfigurations": [
                            {
                                "SheetId": INCIDENTS_SHEET,
                                "Scope": "SELECTED_VISUALS",
                                "VisualIds": ["open-incidents"],
                            }
                        ]
                    }
                },
                "CrossDataset": "SINGLE_DATASET",
                "Status": "ENABLED",
            },
            {
                # The trend sheet shows one train at a time, chosen in its dropdown.
                "FilterGroupId": "trend-train",
                "Filters": [
                    {
                        "CategoryFilter": {
                            "FilterId": "trend-train",
                            "Column": _column(TREND_ID, "device_id"),
                            "Configuration": {
                                "FilterListConfiguration": {
                                    "MatchOperator": "CONTAINS",
                                    "SelectAllOptions": "FILTER_ALL_VALUES",
                                }
                            },
                        }
                    }
                ],
                "ScopeConfiguration": {
                    "SelectedSheets": {
                        "SheetVisualScopingConfigurations": [
                            {"SheetId": TREND_SHEET, "Scope": "ALL_VISUALS"}
                        ]
                    }
                },
                "CrossDataset": "SINGLE_DATASET",
                "Status": "ENABLED",
            },
        ],
    }
