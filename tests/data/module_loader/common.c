/* A tentative definition: with -fcommon it becomes an SHN_COMMON symbol. */
int modcommon_counter;

int modcommon_get(void)
{
	return modcommon_counter;
}
