"""IntentsComponent: the intent jobs, sensors, schedules and assets as a Dagster component for `dg` projects."""

from pathlib import Path

import dagster as dg

from intent_pipelines.errors import SpecError
from intent_pipelines.spec.loader import BUNDLED_DIR


class IntentsComponent(dg.Component, dg.Model, dg.Resolvable):
    """Intent jobs for a team's intent files, with the audit assets, sensors and schedules beside them.

    ``path`` is the folder of the team's intent files, relative to this defs.yaml. The bundled
    intents (deploy-app, restart-app, ...) come too unless ``include_bundled`` is false; a team
    intent of the same name overrides the bundled one. INTENTS_PATH is not read: defs.yaml says it all.
    """

    path: str
    include_bundled: bool = True
    # Off by default: in a dg project `dg check defs` is the CI gate, so a broken runbook must fail
    # it (naming the file) rather than vanish from the UI with a warning, as it does in `intent dev`.
    skip_invalid: bool = False

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        """Build the same Definitions as intent_pipelines.definitions, for this component's intent folders."""
        # Imported here so `import intent_pipelines` (and dg's registry scan) stays light.
        from intent_pipelines.definitions import make_definitions

        # context.path is the folder holding this defs.yaml; an absolute `path` stays as written.
        directory = (context.path / self.path).resolve()
        if not directory.is_dir():
            raise SpecError("intent folder not found", path=str(directory), field_path="attributes.path",
                            hint="Set `path` in defs.yaml to the folder of your intent files, relative to it.")
        dirs: list[Path] = [directory, BUNDLED_DIR] if self.include_bundled else [directory]
        return make_definitions(intent_dirs=dirs, strict=not self.skip_invalid)
