-- Provider-specific channel settings as a JSON object, e.g. {"api_version": "2024-10-21"} for
-- Azure OpenAI. Each provider accepts only the options it knows (see README "Channels").
ALTER TABLE channels ADD COLUMN options TEXT NOT NULL DEFAULT '{}';
