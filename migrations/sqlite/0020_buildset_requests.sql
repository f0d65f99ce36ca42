-- A buildset's requests in id order (the buildset page, Buildbot's
-- `buildrequests?buildsetid=`): with the id in the index the order needs
-- no sort, and PostgreSQL has no reason to walk the primary key instead.
CREATE INDEX buildrequests_buildset_id ON buildrequests (buildset_id, id);
DROP INDEX buildrequests_buildset;
