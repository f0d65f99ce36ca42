-- Pull requests' changes (category 'pull', on refs/pull/N/merge): the
-- console and grid list the newest PRs without walking every change.
CREATE INDEX changes_pulls ON changes (id) WHERE category = 'pull';
