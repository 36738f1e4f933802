"""Usage-based billing domain, Lago's model: billable metrics and aggregation, charge models,
plans and subscriptions, periods, marginal fees for real-time debits, invoices, current usage.
Pure values and functions: no web framework, database or cache client is imported here."""
