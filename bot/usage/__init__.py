"""Usage: calls from Microsoft Graph (`graph`) or the admin center's CSV export (`csv_export`) become `UsageRow`s
(`rows`), which `sync` turns into ledger debits with one report per run."""
