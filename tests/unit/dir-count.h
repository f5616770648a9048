/* How many entries a directory holds (names starting with '.' left out); fails the test when
 * it cannot be read. */
#pragma once

#include <dirent.h>
#include <stddef.h>

static size_t dir_count(const char *path)
{
	struct dirent *de;
	size_t n = 0;
	DIR *d = opendir(path);

	assert_non_null(d);
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}
