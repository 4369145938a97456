def format_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Plain aligned columns for command output."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    )
