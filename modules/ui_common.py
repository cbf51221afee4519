"""A1111's `modules.ui_common`: the output panel, refresh button and save helpers extensions import from it. The
same objects as `modules.ui`'s (`modules.ui.a1111_names`). An adapter: nothing in the core uses it."""

from modules.ui.a1111_names import (  # noqa: F401 (A1111's names here)
    OutputPanel,
    apply_style_symbol,
    clear_prompt_symbol,
    create_output_panel,
    create_refresh_button,
    folder_symbol,
    plaintext_to_html,
    refresh_symbol,
    save_files,
    up_down_symbol,
    update_generation_info,
)
