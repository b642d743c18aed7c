"""PostgreSQL storage: asyncpg pool (``db``), SQL migrations (``migrations``), and small
repositories returning frozen dataclasses: ``menus``, ``schedules``, ``queues``, ``agents``,
``members``, ``extensions``, ``cdrs``; ``snapshot`` reads all configuration consistently."""
