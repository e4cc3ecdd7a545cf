"""Getting data in: files of prompts, preference pairs, step labels and corrections -> warehouse rows."""

from alignloop.pipelines.intake.importer import (
    ImportOptions,
    ImportSummary,
    import_file,
    import_into,
    parse_file,
    plan_import,
)

__all__ = ["ImportOptions", "ImportSummary", "import_file", "import_into", "parse_file", "plan_import"]
