"""Model recipes (JSON) for keyatten_lite_export; installed as keyatten_lite_export.recipes."""
